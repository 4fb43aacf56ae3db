"""Blocking gRPC channels, for code that runs in threads and for sync clients.

The same behaviour as ``shared.rpc.client``: namespace, lease and trace
context go out as metadata on every call; calls fail fast when the peer is
down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from shared.config import DEFAULT_MAX_MESSAGE_SIZE, grpc_target
from shared.rpc.client import channel_options, client_span, end_with_call, request_metadata


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def _details(details: Any, span: Any) -> Any:
    return _CallDetails(
        details.method,
        details.timeout,
        request_metadata(list(details.metadata or ()), span),
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span = client_span(details)
        return end_with_call(span, continuation(_details(details, span), request))

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._call(continuation, client_call_details, request)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return self._call(continuation, client_call_details, request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._call(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return self._call(continuation, client_call_details, request_iterator)


def channel(address: str, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> grpc.Channel:
    """A blocking channel to ``address`` (socket path, ``unix:`` URL or host:port)."""
    raw = grpc.insecure_channel(grpc_target(address), options=channel_options(max_message_size))
    return grpc.intercept_channel(raw, _MetadataInterceptor())
