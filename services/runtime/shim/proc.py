"""Children of the shim: spawning, reaping, running the OCI runtime to completion."""

from __future__ import annotations

import fcntl
import json
import os
import select
import threading
import time

TYPE_CHECKING = False  # typing costs the shim ~1 MiB; mypy reads this as typing's flag
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class ShimError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        # The berth error class the runtime raises: NotFound, FailedPrecondition, ...
        self.code = code


class Suppress:
    """``contextlib.suppress`` without importing contextlib."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds or (OSError,)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, self.kinds)


def now_ns() -> int:
    return time.time_ns()


def write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


class Reaper:
    """The one waitpid(-1) loop: as subreaper the shim also inherits the container's
    orphans. Callers wait for the exits of the pids they spawned."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.exits: dict[int, tuple[int, int]] = {}  # pid -> (status, time)
        self.watchers: list[Callable[[int, int, int], None]] = []  # (pid, status, time)

    def spawn(
        self, argv: Sequence[str], fds: Sequence[int], env: dict[str, str] | None = None
    ) -> int:
        """Start ``argv`` with ``fds[i]`` as its fd ``i``; nothing else is inherited."""
        # Lift the sources above every target first, so that no dup2 overwrites a
        # source that a later one still needs.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
        try:
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(high)]
            with self.lock:
                pid = os.posix_spawnp(
                    argv[0], list(argv), dict(os.environ) if env is None else env,
                    file_actions=actions,
                )  # fmt: skip
                self.lock.notify_all()  # the reaper may be idle, waiting for a first child
        finally:
            for fd in high:
                os.close(fd)
        return pid

    def wait(self, pid: int, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while pid not in self.exits:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"pid {pid} did not exit")
                self.lock.wait(remaining)
            return self.exits.pop(pid)[0]

    def run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                with self.lock:
                    self.lock.wait(0.5)
                continue
            except InterruptedError:
                continue
            at = now_ns()
            with self.lock:
                self.exits[pid] = (status, at)
                while len(self.exits) > 4096:  # orphans nobody waits for
                    del self.exits[next(iter(self.exits))]
                self.lock.notify_all()
            for watch in list(self.watchers):
                watch(pid, status, at)

    def exited(self, pid: int) -> tuple[int, int] | None:
        """The exit of ``pid`` if it already happened (a process that died very young)."""
        with self.lock:
            return self.exits.pop(pid, None)


def run_command(
    reaper: Reaper, argv: list[str], stdin_data: bytes | None = None, timeout: float = 120.0
) -> str:
    """Run a command to completion; its stdout, or ShimError with its stderr."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    try:
        pid = reaper.spawn(argv, (in_r, out_w, err_w))
    finally:
        os.close(out_w)
        os.close(err_w)
        os.close(in_r)
    if stdin_data:
        os.write(in_w, stdin_data)
    os.close(in_w)
    out, err = _read_both(out_r, err_r)
    status = reaper.wait(pid, timeout)
    if exit_code(status) != 0:
        message = runc_error(err) or f"{os.path.basename(argv[0])} exited with {exit_code(status)}"
        raise ShimError(classify(message), message)
    return out.decode(errors="replace")


def _read_both(out_r: int, err_r: int) -> tuple[bytes, bytes]:
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    open_fds = {out_r, err_r}
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [])
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
                os.close(fd)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


def runc_error(stderr: bytes) -> str:
    """runc's JSON log lines carry the message; otherwise the last line of stderr."""
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            return line.strip()
        if isinstance(entry, dict) and entry.get("msg"):
            return str(entry["msg"])
    return ""


def runtime_log_error(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return runc_error(f.read()[-65536:])
    except OSError:
        return ""


def classify(message: str) -> str:
    lowered = message.lower()
    if "does not exist" in lowered or "not found" in lowered or "no such" in lowered:
        return "NotFound"
    if "stopped" in lowered or "running" in lowered or "paused" in lowered:
        return "FailedPrecondition"
    return "Unknown"
