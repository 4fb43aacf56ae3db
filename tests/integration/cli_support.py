"""Driving the ``berth`` command as a user would: the installed script in a subprocess, its
output through a pipe or a terminal (a pty)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
from dataclasses import dataclass

from tests.harness import VENV_BIN, Suite

BERTH = str(VENV_BIN / "berth")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def environment(suite: Suite | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    if suite is not None:
        env["BERTH_ADDRESS"] = suite.address
    return {**env, **extra}


def berth(
    suite: Suite | None,
    *args: str,
    namespace: str = "default",
    check: bool = True,
    input: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``berth -n NAMESPACE ARGS...`` against ``suite`` (BERTH_ADDRESS), output piped."""
    cmd = [BERTH, "-n", namespace, *args]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout,
        input=input if input is not None else "", env=env or environment(suite),
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


@dataclass
class TerminalRun:
    output: str  # as the terminal received it, escape sequences and all
    code: int

    @property
    def text(self) -> str:
        """The output without escape sequences and carriage returns."""
        return ANSI.sub("", self.output).replace("\r", "")


def berth_in_terminal(
    suite: Suite,
    *args: str,
    namespace: str = "default",
    columns: int = 120,
    lines: int = 40,
    timeout: float = 120,
) -> TerminalRun:
    """``berth`` on a terminal of ``columns`` x ``lines`` (a pty), as a person runs it."""
    env = environment(suite, TERM="xterm-256color")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
            os.execve(BERTH, [BERTH, "-n", namespace, *args], env)
        finally:
            os._exit(127)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)  # stuck: the test fails on its output
                break
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return TerminalRun(output.decode(errors="replace"), os.waitstatus_to_exitcode(status))
