"""gRPC channels between berth processes (and from berth's own clients).

A channel made here

* carries the current namespace and lease (``shared.context``) as containerd's
  metadata keys on every call;
* starts client spans so that one pull or run is one trace across processes;
* reconnects quickly: gRPC's default reconnect backoff adds ~0.3 s to every
  start-up race between processes (measured here).

Calls fail fast with UNAVAILABLE when the peer is down (no wait-for-ready).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from shared import context as request_context
from shared.config import DEFAULT_MAX_MESSAGE_SIZE, grpc_target

tracer = trace.get_tracer(__name__)


def channel_options(max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", 0),
    ]


def request_metadata(
    existing: Sequence[tuple[str, str | bytes]], span: trace.Span
) -> list[tuple[str, str | bytes]]:
    """``existing`` plus the namespace, lease and trace context of the current request."""
    metadata = list(existing)
    keys = {k for k, _ in metadata}
    namespace = request_context.current_namespace()
    if namespace and request_context.NAMESPACE_KEY not in keys:
        metadata.append((request_context.NAMESPACE_KEY, namespace))
    lease = request_context.current_lease()
    if lease and request_context.LEASE_KEY not in keys:
        metadata.append((request_context.LEASE_KEY, lease))
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata.extend(carrier.items())
    return metadata


def _with_request_metadata(
    details: grpc.aio.ClientCallDetails, span: trace.Span
) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*request_metadata(list(details.metadata or ()), span)),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


def client_span(details: grpc.aio.ClientCallDetails) -> trace.Span:
    raw: str | bytes = details.method  # grpc passes bytes at run time
    method = raw.decode() if isinstance(raw, bytes) else raw
    service, _, name = method.lstrip("/").rpartition("/")
    return tracer.start_span(
        method.lstrip("/"),
        kind=trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


def end_with_call(span: trace.Span, call: Any) -> Any:
    """End the span when the call finishes (streams outlive the interceptor)."""

    def done(finished: Any) -> None:
        with contextlib.suppress(Exception):
            code = finished.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, finished.details() or code.name))
        span.end()

    call.add_done_callback(done)
    return call


if TYPE_CHECKING:  # the stubs make these generic; the runtime classes are not
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor


class _MetadataInterceptor(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """The same for all four call shapes: metadata in, a client span around the call."""

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span = client_span(details)
        call = await continuation(_with_request_metadata(details, span), request)
        return end_with_call(span, call)

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request)

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request_iterator)

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request_iterator)


def aio_channel(
    address: str,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``address`` (socket path, ``unix:`` URL or host:port)."""
    return grpc.aio.insecure_channel(
        grpc_target(address),
        options=[*channel_options(max_message_size), *extra_options],
        interceptors=[_MetadataInterceptor()],  # type: ignore[list-item]
    )
