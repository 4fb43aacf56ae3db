"""A task's standard streams, as containerd's ``cio`` package hands them to the runtime.

The runtime (the task's shim) opens what the task was created with: FIFO paths,
a ``file://`` URI, or nothing. A :class:`Creator` makes that for a process id:

* :func:`stdio` — this process's stdin, stdout and stderr;
* :func:`with_streams` — any files, file descriptors or in-memory buffers
  (``io.BytesIO``) as stdin, stdout and stderr;
* :func:`terminal` — a terminal (this process's, or an open pty): the container's
  process gets a pty whose output comes back as stdout;
* :func:`log_file` — stdout and stderr appended to a file by the shim itself
  (:func:`log_uri` for any URI the shim serves, a logger binary's too);
* :func:`null_io` — nothing (``/dev/null``).

The streaming creators make FIFOs in a fresh directory (under
:data:`DEFAULT_FIFO_DIR`, which must be on the same host as berth) and copy
between them and the streams in threads. :meth:`IO.wait` returns once the
process's output has all been copied; :meth:`IO.close` stops copying and removes
the FIFOs. A :class:`~berth.Task` does both when it is deleted.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO as FileIO
from typing import Any

DEFAULT_FIFO_DIR = "/run/berth/fifo"
_CHUNK = 1 << 16

Stream = FileIO[bytes] | FileIO[str] | int  # a file object (binary or text) or a descriptor


@dataclass(frozen=True)
class IOConfig:
    """What the runtime is told (``CreateTaskRequest`` stdin/stdout/stderr/terminal)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class IO:
    """The client's end of one process's streams. Without FIFOs it has nothing to do."""

    def __init__(self, config: IOConfig) -> None:
        self.config = config

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the process's output has been copied to the end; False on timeout."""
        return True

    def cancel(self) -> None:
        """Give up waiting for the runtime to open the streams (output keeps flowing)."""

    def close(self) -> None:
        """Stop copying and remove what was made for the process (its FIFOs)."""

    def detach(self) -> None:
        """Stop copying but leave the FIFOs, so that the process can be attached to again
        (``container.task(attach=...)``). Its stdin, if it had one, sees the end."""


def _reader(source: Stream) -> tuple[int | None, Callable[[], bytes]]:
    """A descriptor to wait on (if any) and a function reading a chunk of ``source``."""
    if isinstance(source, int):
        return source, lambda: os.read(source, _CHUNK)
    fd: int | None = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = source.fileno()
    if fd is not None:
        return fd, lambda: os.read(fd, _CHUNK)
    read = getattr(source, "read1", None) or source.read

    def chunk() -> bytes:
        data = read(_CHUNK)
        return data.encode() if isinstance(data, str) else bytes(data)

    return None, chunk


def _writer(dest: Stream) -> Callable[[bytes], None]:
    """A function writing bytes to ``dest`` (text streams get them decoded)."""
    if isinstance(dest, int):

        def to_fd(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(dest, view) :]

        return to_fd
    target: Any = getattr(dest, "buffer", dest)

    def to_file(data: bytes) -> None:
        try:
            target.write(data)
        except TypeError:  # a text stream without a binary buffer (io.StringIO)
            target.write(data.decode(errors="replace"))
        with contextlib.suppress(AttributeError, OSError, ValueError):
            target.flush()

    return to_file


class FifoIO(IO):
    """FIFOs in ``directory`` and the threads that copy through them."""

    def __init__(
        self,
        config: IOConfig,
        directory: Path | None,
        stdin: Stream | None,
        stdout: Stream | None,
        stderr: Stream | None,
    ) -> None:
        super().__init__(config)
        self._directory = directory
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = threading.Event()
        self._cancelled = threading.Event()
        self._outputs: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        for path, dest in ((config.stdout, stdout), (config.stderr, stderr)):
            if path and dest is not None:
                # Opening for reading without a writer yet: succeeds at once, and poll()
                # reports nothing until the shim has opened its end.
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                thread = threading.Thread(
                    target=self._copy_out, args=(fd, _writer(dest)), daemon=True
                )
                self._outputs.append(thread)
        for thread in self._outputs:
            thread.start()
        self._input: threading.Thread | None = None
        if config.stdin and stdin is not None:
            self._input = threading.Thread(
                target=self._copy_in, args=(config.stdin, stdin), daemon=True
            )
            self._input.start()

    def _copy_out(self, fd: int, write: Callable[[bytes], None]) -> None:
        try:
            while not self._stopped.is_set():
                ready, _, _ = select.select([fd, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    return
                write(data)
        except (OSError, ValueError) as e:
            self.errors.append(e)
        finally:
            os.close(fd)

    def _copy_in(self, path: str, source: Stream) -> None:
        fd = -1
        try:
            # Blocks until the shim opens its end: bytes written before would be lost.
            fd = os.open(path, os.O_WRONLY)
            if self._stopped.is_set() or self._cancelled.is_set():
                return
            wait_fd, read = _reader(source)
            while not self._stopped.is_set():
                if wait_fd is not None:
                    ready, _, _ = select.select([wait_fd, self._wake_r], [], [])
                    if self._wake_r in ready:
                        return
                data = read()
                if not data:
                    return  # closing our end is the process's end of input
                _writer(fd)(data)
        except (OSError, ValueError) as e:
            if not self._stopped.is_set():
                self.errors.append(e)
        finally:
            if fd >= 0:
                os.close(fd)

    def wait(self, timeout: float | None = None) -> bool:
        for thread in self._outputs:
            thread.join(timeout)
            if thread.is_alive():
                return False
        return True

    def cancel(self) -> None:
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        if self.config.stdin:
            # Wakes a copier still blocked opening stdin: a reader appears, then goes.
            with contextlib.suppress(OSError):
                os.close(os.open(self.config.stdin, os.O_RDONLY | os.O_NONBLOCK))

    def close(self) -> None:
        self._stop(remove=True)

    def detach(self) -> None:
        self._stop(remove=False)

    def _stop(self, *, remove: bool) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self.cancel()
        threads = [*self._outputs, *([self._input] if self._input else [])]
        for thread in threads:
            thread.join(5)
        if not any(t.is_alive() for t in threads):
            # Only then: a thread still selecting on a closed (and reused) fd would misread.
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        if remove and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def _fifo_root(fifo_dir: str | None) -> Path:
    root = Path(fifo_dir or os.environ.get("BERTH_FIFO_DIR") or DEFAULT_FIFO_DIR)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError:
        if fifo_dir:
            raise
        root = Path(tempfile.gettempdir())  # not root: the suite must run as us too
    return root


class Creator:
    """Makes a process's :class:`IO`: ``creator(id)`` for a new process,
    ``creator.attach(config)`` for one that exists (a task loaded again)."""

    def __init__(
        self,
        stdin: Stream | None = None,
        stdout: Stream | None = None,
        stderr: Stream | None = None,
        *,
        terminal: bool = False,
        fifo_dir: str | None = None,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = None if terminal else stderr  # a pty has one output
        self.terminal = terminal
        self.fifo_dir = fifo_dir

    def __call__(self, process_id: str) -> IO:
        directory = Path(
            tempfile.mkdtemp(prefix=f"{process_id[:32]}-", dir=_fifo_root(self.fifo_dir))
        )
        paths = {}
        try:
            for name, stream in (
                ("stdin", self.stdin),
                ("stdout", self.stdout),
                ("stderr", self.stderr),
            ):
                if stream is not None:
                    path = directory / f"{process_id}-{name}"
                    os.mkfifo(path, 0o700)
                    paths[name] = str(path)
            config = IOConfig(terminal=self.terminal, **paths)
            return FifoIO(config, directory, self.stdin, self.stdout, self.stderr)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def attach(self, config: IOConfig) -> IO:
        """Copy through the FIFOs an existing process was created with."""
        present = next((p for p in (config.stdin, config.stdout, config.stderr) if p), "")
        directory = Path(present).parent if present else None
        return FifoIO(
            config,
            directory,
            self.stdin if config.stdin else None,
            self.stdout if config.stdout else None,
            self.stderr if config.stderr else None,
        )


class _Fixed(Creator):
    """A creator whose config names no FIFOs (the shim does all the work, or nothing)."""

    def __init__(self, config: IOConfig) -> None:
        super().__init__()
        self._config = config

    def __call__(self, process_id: str) -> IO:
        return IO(self._config)

    def attach(self, config: IOConfig) -> IO:
        return IO(config)


def with_streams(
    stdin: Stream | None = None,
    stdout: Stream | None = None,
    stderr: Stream | None = None,
    *,
    terminal: bool = False,
    fifo_dir: str | None = None,
) -> Creator:
    """Copy ``stdin`` into the process and its output into ``stdout`` and ``stderr``.
    Each may be a file object (binary or text, e.g. ``io.BytesIO``), a file descriptor, or
    None for nothing."""
    return Creator(stdin, stdout, stderr, terminal=terminal, fifo_dir=fifo_dir)


def stdio(*, terminal: bool = False, fifo_dir: str | None = None) -> Creator:
    """This process's stdin, stdout and stderr (containerd's ``cio.WithStdio``)."""
    return Creator(sys.stdin, sys.stdout, sys.stderr, terminal=terminal, fifo_dir=fifo_dir)


def terminal(pty: Stream | None = None, *, fifo_dir: str | None = None) -> Creator:
    """A terminal: the process runs on a pty of its own, fed from and copied back to
    ``pty`` (an open terminal, e.g. a ``os.openpty()`` end) or this process's stdin and
    stdout. The spec must ask for one too (``oci.with_tty``)."""
    if pty is None:
        return Creator(sys.stdin, sys.stdout, terminal=True, fifo_dir=fifo_dir)
    return Creator(pty, pty, terminal=True, fifo_dir=fifo_dir)


def log_file(path: str | os.PathLike[str], *, stdin: str = "", terminal: bool = False) -> Creator:
    """stdout and stderr appended to ``path`` by the shim, so they outlive this client.
    ``stdin``: a FIFO the process reads from (whoever opens it for writing feeds it; the
    process sees the end when the last writer closes)."""
    return log_uri("file://" + os.path.abspath(path), stdin=stdin, terminal=terminal)


def log_uri(uri: str, *, stdin: str = "", terminal: bool = False) -> Creator:
    """stdout and stderr to a log URI the shim serves (``ctr run --log-uri``):
    ``file:///path``, or ``binary:///path/to/logger?key=value`` for a logger process the
    shim starts with the output on its pipes. A plain path means ``file://``. ``stdin``
    and ``terminal`` as for :func:`log_file`."""
    if "://" not in uri:
        uri = "file://" + os.path.abspath(uri)
    return _Fixed(IOConfig(stdin=stdin, stdout=uri, stderr=uri, terminal=terminal))


def null_io() -> Creator:
    """No streams: the process reads and writes ``/dev/null``."""
    return _Fixed(IOConfig())
