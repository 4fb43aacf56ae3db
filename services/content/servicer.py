"""``containerd.services.content.v1.Content`` over a content Store.

Parse, call the store (blocking work runs in threads), convert. The Write
stream follows containerd's lock-step protocol: one reply per request, every
reply carrying the ingest's current offset so clients can resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from shared.api.containerd.events import content_pb2 as events
from shared.api.containerd.services.content.v1 import content_pb2 as api
from shared.api.containerd.services.content.v1 import content_pb2_grpc
from shared.content import CHUNK_SIZE, Info, Store, Writer
from shared.errors import InvalidArgument, OutOfRange
from shared.events.outbox import Outbox
from shared.pbutil import timestamp
from shared.proxy.content import info_to_proto, status_to_proto

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

LIST_BATCH = 100


async def _run(fn: Callable[..., T], *args: Any) -> T:
    # to_thread copies the context, so the namespace and lease travel along.
    return await asyncio.to_thread(fn, *args)


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


class ContentServicer(content_pb2_grpc.ContentServicer):
    def __init__(self, store: Store, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox

    async def Info(self, request: api.InfoRequest, context: Context) -> api.InfoResponse:
        info = await _run(self._store.info, request.digest)
        return api.InfoResponse(info=info_to_proto(info))

    async def Update(self, request: api.UpdateRequest, context: Context) -> api.UpdateResponse:
        wanted = Info(request.info.digest, 0, 0, 0, dict(request.info.labels))
        info = await _run(self._store.update, wanted, list(request.update_mask.paths))
        return api.UpdateResponse(info=info_to_proto(info))

    async def List(
        self, request: api.ListContentRequest, context: Context
    ) -> AsyncIterator[api.ListContentResponse]:
        infos = await _run(lambda: list(self._store.walk(list(request.filters))))
        for start in range(0, len(infos), LIST_BATCH):
            batch = infos[start : start + LIST_BATCH]
            yield api.ListContentResponse(info=[info_to_proto(i) for i in batch])

    async def Delete(self, request: api.DeleteContentRequest, context: Context) -> empty_pb2.Empty:
        await _run(self._store.delete, request.digest)
        self._outbox.put("/content/delete", events.ContentDelete(digest=request.digest))
        return empty_pb2.Empty()

    async def Read(
        self, request: api.ReadContentRequest, context: Context
    ) -> AsyncIterator[api.ReadContentResponse]:
        if request.offset < 0:
            raise OutOfRange(f"read at negative offset {request.offset}")
        if 0 < request.size <= CHUNK_SIZE:
            # Small ranged reads come in long runs (ctr content get reads 32 KiB per
            # call): served on the loop, they skip two thread hops of ~0.4 ms each.
            chunks = self._store.read(request.digest, request.offset, request.size)
            yield api.ReadContentResponse(offset=request.offset, data=b"".join(chunks))
            return
        chunks = await _run(self._store.read, request.digest, request.offset, request.size)
        offset = request.offset
        while (chunk := await _run(_next_chunk, chunks)) is not None:
            yield api.ReadContentResponse(offset=offset, data=chunk)
            offset += len(chunk)

    async def Status(self, request: api.StatusRequest, context: Context) -> api.StatusResponse:
        st = await _run(self._store.status, request.ref)
        return api.StatusResponse(status=status_to_proto(st))

    async def ListStatuses(
        self, request: api.ListStatusesRequest, context: Context
    ) -> api.ListStatusesResponse:
        statuses = await _run(self._store.list_statuses, list(request.filters))
        return api.ListStatusesResponse(statuses=[status_to_proto(s) for s in statuses])

    async def Abort(self, request: api.AbortRequest, context: Context) -> empty_pb2.Empty:
        await _run(self._store.abort, request.ref)
        return empty_pb2.Empty()

    async def Write(
        self, request_iterator: AsyncIterator[api.WriteContentRequest], context: Context
    ) -> AsyncIterator[api.WriteContentResponse]:
        try:
            request = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if not request.ref:
            raise InvalidArgument("first message of a write must carry a ref")
        ref, total, expected = request.ref, request.total, request.expected
        writer: Writer = await _run(self._store.writer, ref, total, expected)
        try:
            while True:
                if request.ref and request.ref != ref:
                    raise InvalidArgument(
                        f"ref {request.ref!r} does not match the stream's {ref!r}"
                    )
                total = request.total or total
                expected = request.expected or expected
                reply, committed = await self._step(writer, request, total, expected)
                yield reply
                if committed:
                    return
                try:
                    request = await anext(request_iterator)
                except StopAsyncIteration:
                    return
        finally:
            await _run(writer.close)

    async def _step(
        self, writer: Writer, request: api.WriteContentRequest, total: int, expected: str
    ) -> tuple[api.WriteContentResponse, bool]:
        # One thread hop per message: the checks, the write and the hashing.
        reply, info = await _run(_apply, writer, request, total, expected)
        if info is not None:
            created = events.ContentCreate(digest=info.digest, size=info.size)
            self._outbox.put("/content/create", created)
        return reply, info is not None


def _apply(
    writer: Writer, request: api.WriteContentRequest, total: int, expected: str
) -> tuple[api.WriteContentResponse, Info | None]:
    """Carry out one Write request as containerd's content server does."""
    st = writer.status()
    reply = api.WriteContentResponse(
        action=request.action,
        started_at=timestamp(st.started_at),
        updated_at=timestamp(st.updated_at),
        offset=st.offset,
        total=total,
    )
    if request.action == api.STAT:
        reply.digest = writer.digest()
        return reply, None
    if request.action not in (api.WRITE, api.COMMIT):
        raise InvalidArgument(f"unknown write action {request.action}")
    if request.offset > 0 and request.offset != st.offset:
        raise OutOfRange(f"write @{request.offset} must occur at current offset {st.offset}")
    if request.offset == 0 and st.offset > 0:
        writer.truncate(0)
        reply.offset = 0
    if request.data:
        reply.offset += writer.write(request.data)
    if request.action != api.COMMIT:
        return reply, None
    info = writer.commit(total, expected, dict(request.labels))
    reply.offset = info.size
    reply.digest = info.digest
    return reply, info
