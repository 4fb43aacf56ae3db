"""``containerd.services.streaming.v1.Streaming``: named bidirectional side channels.

A client opens ``Stream``, sends ``StreamInit{id}`` and gets an ``Empty`` ack;
the stream is then registered under that id until either side ends it. A
Transfer call names streams in its request (progress, registry auth, archive
bytes) and the server finds them here. Both servicers live in this process,
as they must: the stream and the transfer meet in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2, message

from shared import typeurl
from shared.api.containerd.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from shared.errors import InvalidArgument, NotFound

Context = grpc.aio.ServicerContext[Any, Any]
_END = object()


class Stream:
    """The server's end of one named stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._outgoing: asyncio.Queue[object] = asyncio.Queue()
        self._incoming: asyncio.Queue[object] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, msg: message.Message) -> None:
        if self.closed.is_set():
            raise NotFound(f"stream {self.name} is closed")
        await self._outgoing.put(typeurl.pack(msg))

    async def recv(self) -> message.Message | None:
        """The next message from the client, or None once it stopped sending."""
        item = await self._incoming.get()
        if item is _END:
            self._incoming.put_nowait(_END)  # later calls see the end too
            return None
        assert isinstance(item, any_pb2.Any)
        return typeurl.unpack(item)

    def close(self) -> None:
        """End the stream from the server side (the client's read ends)."""
        self._outgoing.put_nowait(_END)


class StreamManager:
    def __init__(self) -> None:
        self._streams: dict[str, Stream] = {}
        self._registered = asyncio.Condition()

    async def register(self, stream: Stream) -> None:
        async with self._registered:
            if stream.name in self._streams:
                raise InvalidArgument(f"stream {stream.name} already exists")
            self._streams[stream.name] = stream
            self._registered.notify_all()

    async def unregister(self, stream: Stream) -> None:
        async with self._registered:
            if self._streams.get(stream.name) is stream:
                del self._streams[stream.name]

    async def get(self, name: str, timeout: float = 10.0) -> Stream:
        """The stream called ``name``, waiting briefly for a client that is still opening it."""

        async def wait() -> Stream:
            async with self._registered:
                await self._registered.wait_for(lambda: name in self._streams)
                return self._streams[name]

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise NotFound(f"stream {name!r} was not opened") from None


class StreamingServicer(streaming_pb2_grpc.StreamingServicer):
    def __init__(self, manager: StreamManager) -> None:
        self._manager = manager

    async def Stream(
        self, request_iterator: AsyncIterator[any_pb2.Any], context: Context
    ) -> AsyncIterator[any_pb2.Any]:
        first = await anext(request_iterator, None)
        if first is None:
            return
        init = typeurl.unpack_as(first, streaming_pb2.StreamInit)
        if not init.id:
            raise InvalidArgument("StreamInit needs an id")
        stream = Stream(init.id)
        await self._manager.register(stream)

        async def pump_in() -> None:
            try:
                async for item in request_iterator:
                    await stream._incoming.put(item)
            finally:
                await stream._incoming.put(_END)

        reader = asyncio.create_task(pump_in())
        try:
            yield typeurl.pack(empty_pb2.Empty())
            while True:
                item = await stream._outgoing.get()
                if item is _END:
                    return
                assert isinstance(item, any_pb2.Any)
                yield item
        finally:
            stream.closed.set()
            await self._manager.unregister(stream)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
