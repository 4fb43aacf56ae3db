"""A process run in the foreground: its streams on ours, our signals on it, a terminal in
raw mode that follows our window's size, and its exit status as ours.

Shared by ``run``, ``tasks start``, ``tasks exec`` and ``tasks attach``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from berth.cli.core import EXIT_USAGE, fail, state

if TYPE_CHECKING:
    import berth
    from berth import cio

# What ctr forwards too, less what would make no sense to pass on (SIGCHLD, SIGWINCH,
# SIGPIPE, SIGURG) or cannot be caught.
FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGALRM, signal.SIGCONT,
)  # fmt: skip


def default_fifo_dir() -> str | None:
    """FIFOs beside the suite's socket (``<state>/fifo``) when it is a local path, so that
    they live and go with the suite's state; ``$BERTH_FIFO_DIR`` says otherwise."""
    address = state().address.removeprefix("unix://")
    if os.environ.get("BERTH_FIFO_DIR") or not address.startswith("/"):
        return None
    return os.path.join(os.path.dirname(address), "fifo")


def streams(
    *, terminal: bool, null_io: bool = False, log_uri: str = "", fifo_dir: str | None = None
) -> cio.Creator:
    """The process's streams as ctr chooses them: a terminal, nothing, a log, or ours."""
    from berth import cio

    fifo_dir = fifo_dir or default_fifo_dir()

    if terminal:
        if null_io:
            fail("--tty and --null-io cannot be used together", EXIT_USAGE)
        return cio.terminal(fifo_dir=fifo_dir)
    if null_io:
        return cio.null_io()
    if log_uri:
        return cio.log_uri(log_uri)
    return cio.stdio(fifo_dir=fifo_dir)


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Our terminal in raw mode for the block (keys go to the process as typed)."""
    fd = sys.stdin.fileno() if enabled else -1
    if fd < 0 or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def window_size() -> tuple[int, int] | None:
    """Our terminal's (columns, lines), if we have one."""
    for stream in (sys.stdout, sys.stdin):
        with contextlib.suppress(OSError, ValueError):
            size = os.get_terminal_size(stream.fileno())
            return size.columns, size.lines
    return None


def _window(process: berth.Process) -> None:
    size = window_size()
    if size is not None:
        process.resize(*size)


@contextlib.contextmanager
def follow(process: berth.Process, *, terminal: bool) -> Iterator[None]:
    """While the process runs: resize its terminal with ours, or forward our signals."""
    import berth

    def resize(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(berth.BerthError):
            _window(process)

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(berth.BerthError):
            process.kill(signum)

    handlers = {signal.SIGWINCH: resize} if terminal else dict.fromkeys(FORWARDED, forward)
    saved = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        if terminal:
            with contextlib.suppress(berth.BerthError):
                _window(process)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def wait_attached(process: berth.Process, exited: berth.ExitWaiter, *, terminal: bool) -> int:
    """Follow a started process to its end; its exit code."""
    with follow(process, terminal=terminal):
        return exited.result().code


def write_pid_file(path: str, pid: int) -> None:
    if path:
        with open(path, "w") as f:
            f.write(str(pid))
