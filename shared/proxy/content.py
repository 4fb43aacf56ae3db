"""The content contract over gRPC (containerd's content/proxy), plus its wire mapping.

The images service, the GC, the CRI service and the public client all reach
the content service through :class:`ContentProxy`, so they share one
behaviour with the store itself (see tests/conformance/content.py).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from shared.api.containerd.services.content.v1 import content_pb2 as api
from shared.api.containerd.services.content.v1 import content_pb2_grpc
from shared.content import CHUNK_SIZE, Info, Status
from shared.errors import FailedPrecondition
from shared.pbutil import nanos, timestamp
from shared.rpc.status import to_native


def info_to_proto(info: Info) -> api.Info:
    return api.Info(
        digest=info.digest,
        size=info.size,
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_proto(msg: api.Info) -> Info:
    return Info(
        msg.digest, msg.size, nanos(msg.created_at), nanos(msg.updated_at), dict(msg.labels)
    )


def status_to_proto(st: Status) -> api.Status:
    return api.Status(
        started_at=timestamp(st.started_at),
        updated_at=timestamp(st.updated_at),
        ref=st.ref,
        offset=st.offset,
        total=st.total,
        expected=st.expected,
    )


def status_from_proto(msg: api.Status) -> Status:
    return Status(
        ref=msg.ref,
        offset=msg.offset,
        total=msg.total,
        expected=msg.expected,
        started_at=nanos(msg.started_at),
        updated_at=nanos(msg.updated_at),
    )


class _Closed:
    pass


_CLOSE = _Closed()


class ProxyWriter:
    """One Write stream, driven lock-step: each request waits for its reply."""

    def __init__(self, stub: content_pb2_grpc.ContentStub, ref: str, total: int, expected: str):
        self._ref = ref
        self._total = total
        self._expected = expected
        self._requests: queue.Queue[api.WriteContentRequest | _Closed] = queue.Queue()
        self._responses: Any = stub.Write(self._request_stream())
        self._lock = threading.Lock()
        self._closed = False
        self._finished = False
        self._offset = 0
        first = self._send(api.WriteContentRequest(action=api.STAT, ref=ref, total=total,
                                                   expected=expected))  # fmt: skip
        self._offset = first.offset
        self._digest = first.digest
        self._status = first

    def _request_stream(self) -> Iterator[api.WriteContentRequest]:
        while not isinstance(item := self._requests.get(), _Closed):
            yield item

    def _send(self, request: api.WriteContentRequest) -> api.WriteContentResponse:
        if self._closed:
            raise FailedPrecondition(f"writer for {self._ref} is closed")
        with self._lock:
            self._requests.put(request)
            try:
                return next(self._responses)  # type: ignore[no-any-return]
            except grpc.RpcError as e:
                self._end_requests()
                raise to_native(e) from e
            except StopIteration:
                self._end_requests()
                raise FailedPrecondition(f"write stream for {self._ref} ended") from None

    def _end_requests(self) -> None:
        # Unblocks gRPC's thread that waits for our next request.
        self._closed = self._finished = True
        self._requests.put(_CLOSE)

    @property
    def ref(self) -> str:
        return self._ref

    def status(self) -> Status:
        reply = self._send(api.WriteContentRequest(action=api.STAT, ref=self._ref))
        self._offset = reply.offset
        return Status(
            ref=self._ref,
            offset=reply.offset,
            total=reply.total,
            expected=self._expected,
            started_at=nanos(reply.started_at),
            updated_at=nanos(reply.updated_at),
        )

    def digest(self) -> str:
        reply = self._send(api.WriteContentRequest(action=api.STAT, ref=self._ref))
        return reply.digest

    def write(self, data: bytes) -> int:
        # Messages stay under the 16 MiB gRPC limit: large writes go in CHUNK_SIZE pieces.
        view = memoryview(data)
        start = self._offset
        for at in range(0, len(view), CHUNK_SIZE):
            piece = bytes(view[at : at + CHUNK_SIZE])
            reply = self._send(
                api.WriteContentRequest(
                    action=api.WRITE, ref=self._ref, offset=self._offset, data=piece
                )
            )
            self._offset = reply.offset
        return self._offset - start

    def truncate(self, size: int) -> None:
        reply = self._send(api.WriteContentRequest(action=api.WRITE, ref=self._ref, offset=size))
        self._offset = reply.offset

    def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> Info:
        reply = self._send(
            api.WriteContentRequest(
                action=api.COMMIT,
                ref=self._ref,
                total=size,
                offset=self._offset,
                expected=expected or self._expected,
                labels=dict(labels or {}),
            )
        )
        self.close()
        return Info(reply.digest, reply.offset, nanos(reply.updated_at), nanos(reply.updated_at),
                    dict(labels or {}))  # fmt: skip

    def close(self) -> None:
        """End the stream; the server keeps an uncommitted ingest for resume."""
        if self._finished:
            return
        self._finished = True
        self._closed = True
        self._requests.put(_CLOSE)
        # Wait for the server to end its side, so the ref is free when we return.
        with contextlib.suppress(grpc.RpcError):
            for _ in self._responses:
                pass


class ContentProxy:
    """A content Store whose data lives in a content service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = content_pb2_grpc.ContentStub(channel)

    def info(self, digest: str) -> Info:
        try:
            return info_from_proto(self._stub.Info(api.InfoRequest(digest=digest)).info)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def read(self, digest: str, offset: int = 0, size: int = 0) -> Iterator[bytes]:
        stream: Any = self._stub.Read(
            api.ReadContentRequest(digest=digest, offset=offset, size=size)
        )
        try:
            first = next(stream, None)
        except grpc.RpcError as e:
            raise to_native(e) from e
        return self._chunks(first, stream)

    @staticmethod
    def _chunks(first: api.ReadContentResponse | None, stream: Any) -> Iterator[bytes]:
        if first is None:
            return
        yield first.data
        try:
            for reply in stream:
                yield reply.data
        except grpc.RpcError as e:
            raise to_native(e) from e

    def writer(self, ref: str, total: int = 0, expected: str = "") -> ProxyWriter:
        return ProxyWriter(self._stub, ref, total, expected)

    def status(self, ref: str) -> Status:
        try:
            return status_from_proto(self._stub.Status(api.StatusRequest(ref=ref)).status)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def list_statuses(self, filters: Sequence[str] = ()) -> list[Status]:
        try:
            reply = self._stub.ListStatuses(api.ListStatusesRequest(filters=list(filters)))
        except grpc.RpcError as e:
            raise to_native(e) from e
        return [status_from_proto(s) for s in reply.statuses]

    def abort(self, ref: str) -> None:
        try:
            self._stub.Abort(api.AbortRequest(ref=ref))
        except grpc.RpcError as e:
            raise to_native(e) from e

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        request = api.UpdateRequest(
            info=api.Info(digest=info.digest, labels=dict(info.labels)),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths)),
        )
        try:
            return info_from_proto(self._stub.Update(request).info)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def walk(self, filters: Sequence[str] = ()) -> Iterator[Info]:
        try:
            for reply in self._stub.List(api.ListContentRequest(filters=list(filters))):
                for info in reply.info:
                    yield info_from_proto(info)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def delete(self, digest: str) -> None:
        try:
            self._stub.Delete(api.DeleteContentRequest(digest=digest))
        except grpc.RpcError as e:
            raise to_native(e) from e
