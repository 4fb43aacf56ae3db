"""A process's stdio: the client's FIFOs, a log file, a logging binary, or a pty.

Destinations are given as containerd's runc shim takes them: a FIFO path (no
scheme), ``file:///path`` (stdout and stderr appended to one file) or
``binary:///path/to/logger?key=value`` (a logging binary started by the shim
with ``CONTAINER_ID`` and ``CONTAINER_NAMESPACE`` as its only environment, the
query as arguments ``key value``, the process's stdout on its fd 3, stderr on fd
4, and fd 5 to close, or write a byte to, once it is ready to read). The scheme
of stdout decides for both streams.

``file:///path?format=cri`` writes the file in Kubernetes' container log format
(``<RFC 3339 time> <stdout|stderr> <F|P> <line>``, lines over 16 KiB split into
partial records), which kubelet reads: the CRI service's containers log this way,
so their logs need no process of the CRI's own and survive its restarts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import threading
import time

from services.runtime.shim.proc import Reaper, ShimError, Suppress

TYPE_CHECKING = False  # as in proc.py: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable

LOGGER_READY_TIMEOUT = 30.0
LOGGER_STOP_TIMEOUT = 12.0  # containerd gives a logging binary as long to flush on exit
CRI_LOG_LINE = 16384  # containerd's max_container_log_line_size


def log_uri(value: str) -> tuple[str, str, list[str]]:
    """(scheme, path, arguments) of a stdio destination; scheme "" for a plain path."""
    if not value or value.startswith("/") or ":" not in value:
        return "", value, []
    from urllib.parse import parse_qsl, unquote, urlsplit  # only log URIs pay for it

    parts = urlsplit(value)
    query: dict[str, str] = {}
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, val)  # as containerd: the first value of each key
    return parts.scheme, unquote(parts.path), [item for pair in query.items() for item in pair]


def open_output(path: str) -> int | None:
    """An open fd for a FIFO the client reads; None for no destination."""
    if not path:
        return None
    # O_RDWR: the FIFO never has no reader, so writes never fail with EPIPE when the
    # client went away; containerd's shim does the same.
    return os.open(path, os.O_RDWR)


def open_log_file(path: str) -> int:
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def open_input(path: str) -> int | None:
    if not path:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return fd


def copy(src: int, dst: int, close_dst: bool, done: threading.Event | None = None) -> None:
    try:
        if _splice(src, dst):
            _read_write(src, dst)
    finally:
        os.close(src)
        if close_dst:
            os.close(dst)
        if done is not None:
            done.set()


def _splice(src: int, dst: int) -> bool:
    """Move bytes in the kernel (one side is always a pipe here); True to go on by hand."""
    try:
        while os.splice(src, dst, 1 << 20):
            pass
    except OSError as e:
        # EIO: a pty whose other side closed. EINVAL: a pair splice cannot do (an
        # O_APPEND file); anything else is a destination gone bad, which the
        # plain loop handles by dropping output so the process never blocks.
        return e.errno != errno.EIO
    return False


def copy_cri(
    src: int,
    dst: int,
    stream: bytes,
    log: CriLog,
    close_dst: bool,
    done: threading.Event | None = None,
) -> None:
    """Copy ``src`` into the CRI log as records of ``stream`` (b"stdout"/b"stderr");
    ``dst`` is this stream's own descriptor of the file, reopened when it is rotated."""
    pending = b""
    try:
        while True:
            try:
                data = os.read(src, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                break
            pending += data
            while True:
                end = pending.find(b"\n", 0, CRI_LOG_LINE + 1)
                if end >= 0:
                    dst = log.write(dst, stream, b"F", pending[:end])
                    pending = pending[end + 1 :]
                elif len(pending) >= CRI_LOG_LINE:
                    dst = log.write(dst, stream, b"P", pending[:CRI_LOG_LINE])
                    pending = pending[CRI_LOG_LINE:]
                else:
                    break
        if pending:  # the last line, unterminated: whole as far as anyone will know
            dst = log.write(dst, stream, b"F", pending)
    finally:
        os.close(src)
        if close_dst:
            os.close(dst)
        if done is not None:
            done.set()


class CriLog:
    """A process's CRI log file: records from its streams, one at a time.

    kubelet rotates the file by renaming it and asking the runtime to reopen the
    path; a writer notices that the path is no longer its file (another inode, or
    none) before each record and opens the path afresh.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, fd: int, stream: bytes, tag: bytes, line: bytes) -> int:
        """Append one record through ``fd``; returns the descriptor to use from now on."""
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()
        record = b"%s.%09dZ %s %s %s\n" % (stamp, nanos, stream, tag, line)
        with self.lock:
            fd = self._current(fd)
            view = memoryview(record)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except OSError:
                    break  # a full disk drops output; the process must never block on it
        return fd

    def _current(self, fd: int) -> int:
        try:
            on_disk = os.stat(self.path)
        except OSError:
            on_disk = None
        mine = os.fstat(fd)
        if on_disk is not None and (on_disk.st_ino, on_disk.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        try:
            fresh = open_log_file(self.path)
        except OSError:
            return fd  # keep writing where we can
        os.close(fd)
        return fresh


def _read_write(src: int, dst: int) -> None:
    while True:
        try:
            data = os.read(src, 65536)
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        if not data:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(dst, view) :]
            except OSError:
                view = memoryview(b"")


def receive_fd(sock: socket.socket) -> int:
    """The pty master runc sends on the console socket (SCM_RIGHTS)."""
    conn, _ = sock.accept()
    with conn:
        _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("i")))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd: int = struct.unpack("i", data[: struct.calcsize("i")])[0]
            return fd
    raise ShimError("Unknown", "runc sent no terminal on the console socket")


def _start_thread(target: Callable[..., None], *args: object) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


class Process:
    """The init process or an exec, with its stdio plumbing."""

    def __init__(self, exec_id: str, stdio: dict[str, object]) -> None:
        self.exec_id = exec_id
        self.stdin_path = str(stdio.get("stdin") or "")
        self.stdout_path = str(stdio.get("stdout") or "")
        self.stderr_path = str(stdio.get("stderr") or "")
        self.terminal = bool(stdio.get("terminal"))
        self.spec = stdio.get("spec")
        self.pid = 0
        self.status = "created"
        self.exit_status = 0
        self.exited_at = 0
        # Wakes the thread feeding stdin to close it: that thread alone owns the fds,
        # so none is closed twice (a second close would hit whatever reused the number).
        self.stdin_wake: int | None = None
        self.stdin_lock = threading.Lock()
        self.pty: int | None = None
        self.pty_out: int | None = None  # where a terminal's output goes, until attached
        self.logger = 0  # the pid of a binary:// logging process
        self.cri_log: CriLog | None = None  # set for file://...?format=cri
        self.outputs_done: list[threading.Event] = []
        self.exited = threading.Event()

    def state(self) -> dict[str, object]:
        return {
            "exec_id": self.exec_id, "pid": self.pid, "status": self.status,
            "exit_status": self.exit_status, "exited_at": self.exited_at,
            "stdin": self.stdin_path, "stdout": self.stdout_path, "stderr": self.stderr_path,
            "terminal": self.terminal,
        }  # fmt: skip

    # -- destinations ---------------------------------------------------------

    def _sinks(self, reaper: Reaper, owner: dict[str, str]) -> tuple[int | None, int | None, bool]:
        """fds for stdout and stderr, and whether the process writes them itself (a
        logging binary's pipes) rather than through a copy by the shim."""
        scheme, path, args = log_uri(self.stdout_path)
        if scheme == "":
            out = open_output(self.stdout_path)
            try:
                return out, open_output(self.stderr_path), False
            except OSError:
                if out is not None:
                    os.close(out)
                raise
        if scheme == "file":
            options = dict(zip(args[::2], args[1::2], strict=False))
            if options.get("format", "") not in ("", "cri"):
                raise ShimError("InvalidArgument", f"unknown log format in {self.stdout_path}")
            if options.get("format") == "cri":
                self.cri_log = CriLog(path)
            return open_log_file(path), open_log_file(path), False
        if scheme == "binary":
            out_w, err_w = self._start_logger(reaper, path, args, owner)
            return out_w, err_w, True
        raise ShimError("InvalidArgument", f"unknown stdio scheme {scheme!r} in {self.stdout_path}")

    def _start_logger(
        self, reaper: Reaper, path: str, args: list[str], owner: dict[str, str]
    ) -> tuple[int, int]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ready_r, ready_w = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        env = {"CONTAINER_ID": owner["id"], "CONTAINER_NAMESPACE": owner["namespace"]}
        try:
            fds = (null, null, null, out_r, err_r, ready_w)  # fds 3, 4, 5 as containerd's
            self.logger = reaper.spawn([path, *args], fds, env)
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w, ready_r):
                os.close(fd)
            raise ShimError("InvalidArgument", f"logging binary {path}: {e.strerror}") from None
        finally:
            os.close(null)
            os.close(ready_w)
        os.close(out_r)
        os.close(err_r)
        try:
            ready, _, _ = select.select([ready_r], [], [], LOGGER_READY_TIMEOUT)
            if not ready:
                raise ShimError("Unknown", f"logging binary {path} did not get ready")
            os.read(ready_r, 1)  # a byte or EOF: either says ready
        except BaseException:
            os.close(out_w)
            os.close(err_w)
            self.stop_logger(reaper)
            raise
        finally:
            os.close(ready_r)
        return out_w, err_w

    def stop_logger(self, reaper: Reaper) -> None:
        """SIGTERM the logging binary, give it time to flush, then SIGKILL."""
        pid, self.logger = self.logger, 0
        if not pid or reaper.exited(pid) is not None:
            return
        with Suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            reaper.wait(pid, LOGGER_STOP_TIMEOUT)
        except TimeoutError:
            with Suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with Suppress(TimeoutError):
                reaper.wait(pid, 5)

    # -- wiring ---------------------------------------------------------------

    def prepare_stdio(
        self, console_path: str, reaper: Reaper, owner: dict[str, str]
    ) -> tuple[tuple[int, int, int], socket.socket | None, list[int]]:
        """fds for runc's stdio (and a console socket for a terminal); fds to close after."""
        out, err, direct = self._sinks(reaper, owner)
        null = os.open(os.devnull, os.O_RDWR)
        to_close = [null]
        if self.terminal:
            if err is not None:
                os.close(err)  # a terminal has one output
            self.pty_out = out
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with Suppress(FileNotFoundError):
                os.unlink(console_path)
            listener.bind(console_path)
            listener.listen(1)
            return (null, null, null), listener, to_close
        stdin_fd = null
        src = open_input(self.stdin_path)
        if src is not None:
            r, w = os.pipe()
            stdin_fd = r
            to_close.append(r)
            self.stdin_wake = os.eventfd(0, os.EFD_CLOEXEC)
            _start_thread(self._feed_stdin, src, w, self.stdin_wake)
        fds = [stdin_fd]
        for dst, stream in ((out, b"stdout"), (err, b"stderr")):
            if dst is None:
                fds.append(null)
            elif direct:
                fds.append(dst)
                to_close.append(dst)
            else:
                r, w = os.pipe()
                fds.append(w)
                to_close.append(w)
                done = threading.Event()
                self.outputs_done.append(done)
                if self.cri_log is not None:
                    _start_thread(copy_cri, r, dst, stream, self.cri_log, True, done)
                else:
                    _start_thread(copy, r, dst, True, done)
        return (fds[0], fds[1], fds[2]), None, to_close

    def abandon_stdio(self, reaper: Reaper) -> None:
        """After a failed launch: what prepare_stdio opened that nothing will close."""
        if self.pty_out is not None:
            os.close(self.pty_out)
            self.pty_out = None
        self.close_stdin()
        self.stop_logger(reaper)

    def attach_pty(self, master: int) -> None:
        self.pty = master
        out, self.pty_out = self.pty_out, None
        if out is not None:
            done = threading.Event()
            self.outputs_done.append(done)
            if self.cri_log is not None:
                _start_thread(copy_cri, os.dup(master), out, b"stdout", self.cri_log, True, done)
            else:
                _start_thread(copy, os.dup(master), out, True, done)
        src = open_input(self.stdin_path)
        if src is not None:
            _start_thread(copy, src, os.dup(master), True)

    def _feed_stdin(self, src: int, dst: int, wake: int) -> None:
        """Copy the client's stdin into the process's until either ends or close_stdin."""
        try:
            by_hand = False
            while True:
                ready, _, _ = select.select([src, wake], [], [])
                if wake in ready:
                    return
                if not by_hand:
                    try:
                        if not os.splice(src, dst, 1 << 16):
                            return
                        continue
                    except OSError:
                        by_hand = True
                data = os.read(src, 65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view) :]
        except OSError:
            pass  # the process went away: nothing more to feed it
        finally:
            with self.stdin_lock:
                os.close(src)
                os.close(dst)
                os.close(wake)
                self.stdin_wake = None

    def close_stdin(self) -> None:
        with self.stdin_lock:
            if self.stdin_wake is not None:
                os.eventfd_write(self.stdin_wake, 1)

    def resize(self, width: int, height: int) -> None:
        if self.pty is None:
            raise ShimError(
                "FailedPrecondition", f"process {self.exec_id or 'init'} has no terminal"
            )
        fcntl.ioctl(self.pty, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
