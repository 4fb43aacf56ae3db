"""Flow-controlled byte streams over Streaming side channels, for code in worker threads.

An archive travels on a named stream as ``containerd.types.transfer.Data``
messages under credit-based flow control (containerd's
``pkg/transfer/streaming``): the receiver grants bytes with
``WindowUpdate{update}`` (credits add up) and the sender never has more bytes
in flight than it was granted. The receiver speaks first.

The archive code is synchronous and runs in a worker thread, while the
:class:`~services.images.streams.Stream` lives on the event loop. These
adapters give that code a plain ``read``/``write`` and hop to the loop with
``asyncio.run_coroutine_threadsafe``:

* :class:`RemoteReader` (import: the client sends) grants :data:`WINDOW`
  bytes before its first read and tops the grant up as data arrives, so at
  most one window is ever queued in this process;
* :class:`RemoteWriter` (export: the client receives) sends at most what the
  client granted, in messages of at most :data:`MAX_DATA` bytes; its window
  updates are read by a task that :func:`remote_writer` owns.

containerd grants 64 KiB at a time and sends 32 KiB messages; both ends
accept any sizes, so berth uses larger ones (Python pays per message).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from services.images.streams import Stream
from shared.api.containerd.types.transfer import streaming_pb2
from shared.errors import Canceled, DeadlineExceeded, InvalidArgument, NotFound

WINDOW = 4 << 20  # bytes a receiver lets be in flight
MAX_DATA = 1 << 20  # bytes per Data message sent
IDLE_TIMEOUT = 300.0  # seconds without progress before a transfer gives up

T = TypeVar("T")


class _Bridge:
    def __init__(self, stream: Stream, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.stream = stream
        self._loop = loop
        self._timeout = timeout

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the stream's loop and wait for it (from a worker thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded(
                f"stream {self.stream.name}: nothing happened for {self._timeout:.0f}s"
            ) from None


class RemoteReader:
    """The bytes a client sends on a stream, as a file opened for reading."""

    def __init__(
        self,
        stream: Stream,
        loop: asyncio.AbstractEventLoop,
        *,
        window: int = WINDOW,
        timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._bridge = _Bridge(stream, loop, timeout)
        self._window = window
        self._outstanding = 0  # granted, not yet received
        self._started = False
        self._buffer = memoryview(b"")
        self._eof = False
        self.bytes_read = 0

    def _grant(self, update: int) -> None:
        # A client that went away cannot take credit; its end of data shows in recv.
        with contextlib.suppress(NotFound):
            self._bridge.call(self._bridge.stream.send(streaming_pb2.WindowUpdate(update=update)))
        self._outstanding += update

    def _fill(self) -> None:
        if not self._started:
            self._started = True
            self._grant(self._window)
        while not self._buffer and not self._eof:
            try:
                msg = self._bridge.call(self._bridge.stream.recv())
            except NotFound:  # a message of a type nobody registered: ignored, as containerd does
                continue
            if msg is None:
                self._eof = True
            elif isinstance(msg, streaming_pb2.Data):
                self._outstanding -= len(msg.data)
                if self._outstanding < 0:
                    raise InvalidArgument(
                        f"stream {self._bridge.stream.name}: the client sent "
                        f"{-self._outstanding} bytes more than its window allowed"
                    )
                if self._outstanding <= self._window // 2:
                    self._grant(self._window - self._outstanding)
                self._buffer = memoryview(msg.data)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left for -1); b"" only at the end of the stream."""
        if size == 0:
            return b""
        if size < 0:
            parts = []
            while chunk := self.read(MAX_DATA):
                parts.append(chunk)
            return b"".join(parts)
        self._fill()
        piece = self._buffer[:size]
        self._buffer = self._buffer[len(piece) :]
        self.bytes_read += len(piece)
        return piece.tobytes()


class RemoteWriter:
    """A file opened for writing whose bytes go to the client on a stream, as it grants them."""

    def __init__(
        self, stream: Stream, loop: asyncio.AbstractEventLoop, *, timeout: float = IDLE_TIMEOUT
    ) -> None:
        self._bridge = _Bridge(stream, loop, timeout)
        self._timeout = timeout
        self._credit = 0
        self._ended = False  # the client sends no more window updates
        self._changed = threading.Condition()
        self.bytes_written = 0

    async def pump_window_updates(self) -> None:
        """Read the client's window updates until it stops sending (runs on the loop)."""
        try:
            while True:
                try:
                    msg = await self._bridge.stream.recv()
                except NotFound:
                    continue
                if msg is None:
                    return
                if isinstance(msg, streaming_pb2.WindowUpdate) and msg.update > 0:
                    with self._changed:
                        self._credit += msg.update
                        self._changed.notify_all()
        finally:
            self.end()

    def end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _take_credit(self, wanted: int) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: self._credit > 0 or self._ended, self._timeout):
                raise DeadlineExceeded(
                    f"stream {self._bridge.stream.name}: the client granted no window "
                    f"for {self._timeout:.0f}s"
                )
            if self._credit == 0:
                raise Canceled(f"stream {self._bridge.stream.name}: the client stopped reading")
            n = min(wanted, self._credit, MAX_DATA)
            self._credit -= n
            return n

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        while view:
            n = self._take_credit(len(view))
            msg = streaming_pb2.Data(data=view[:n].tobytes())
            try:
                self._bridge.call(self._bridge.stream.send(msg))
            except NotFound as e:
                raise Canceled(f"stream {self._bridge.stream.name}: the client went away") from e
            view = view[n:]
            self.bytes_written += n
        return len(data)


@contextlib.asynccontextmanager
async def remote_writer(
    stream: Stream, *, timeout: float = IDLE_TIMEOUT
) -> AsyncIterator[RemoteWriter]:
    """A RemoteWriter on ``stream`` whose window-update reader lives as long as this block."""
    writer = RemoteWriter(stream, asyncio.get_running_loop(), timeout=timeout)
    pump = asyncio.create_task(
        writer.pump_window_updates(), name=f"window updates of {stream.name}"
    )
    try:
        yield writer
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        writer.end()
