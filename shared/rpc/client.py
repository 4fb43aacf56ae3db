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

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from shared import context as request_context
from shared.config import DEFAULT_MAX_MESSAGE_SIZE, grpc_target


def channel_options(max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", 0),
    ]


def _with_request_metadata(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    namespace = request_context.current_namespace()
    if namespace and request_context.NAMESPACE_KEY not in metadata:
        metadata.add(request_context.NAMESPACE_KEY, namespace)
    lease = request_context.current_lease()
    if lease and request_context.LEASE_KEY not in metadata:
        metadata.add(request_context.LEASE_KEY, lease)
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _MetadataInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor[Any, Any],
    grpc.aio.UnaryStreamClientInterceptor[Any, Any],
    grpc.aio.StreamUnaryClientInterceptor[Any, Any],
    grpc.aio.StreamStreamClientInterceptor[Any, Any],
):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_request_metadata(client_call_details), request)

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_request_metadata(client_call_details), request)

    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(_with_request_metadata(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(_with_request_metadata(client_call_details), request_iterator)


def aio_channel(
    address: str,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    extra_options: Sequence[tuple[str, Any]] = (),
    trace: bool = True,
) -> grpc.aio.Channel:
    """An asyncio channel to ``address`` (socket path, ``unix:`` URL or host:port)."""
    interceptors: list[Any] = [_MetadataInterceptor()]
    if trace:
        interceptors = [*aio_client_interceptors(), *interceptors]  # type: ignore[no-untyped-call]
    return grpc.aio.insecure_channel(
        grpc_target(address),
        options=[*channel_options(max_message_size), *extra_options],
        interceptors=interceptors,
    )
