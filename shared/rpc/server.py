"""gRPC server bootstrap: unix socket (and optional TCP), health, tracing, errors.

Every servicer method runs inside :class:`RequestContextInterceptor`, which

* reads ``containerd-namespace`` / ``containerd-lease`` into ``shared.context``;
* starts a server span, continuing the caller's trace (W3C ``traceparent``);
* turns a raised :class:`shared.errors.BerthError` into its status code, and any
  other exception into UNKNOWN with the message logged, so handlers just raise.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from shared import context as request_context
from shared.config import socket_path
from shared.errors import BerthError
from shared.rpc.status import code_for

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def _enter_request(context: grpc.aio.ServicerContext[Any, Any], method: str) -> trace.Span:
    """Fill the request context from metadata and start the server span."""
    metadata = context.invocation_metadata() or ()
    request_context.namespace_var.set(_metadata_value(metadata, request_context.NAMESPACE_KEY))
    request_context.lease_var.set(_metadata_value(metadata, request_context.LEASE_KEY))
    carrier = {k: v for k, v in metadata if isinstance(v, str)}
    service, _, name = method.lstrip("/").rpartition("/")
    return tracer.start_span(
        method.lstrip("/"),
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], error: Exception, method: str, span: trace.Span
) -> None:
    code = code_for(error)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    span.set_status(Status(StatusCode.ERROR, str(error)))
    if isinstance(error, BerthError):
        log.debug("%s: %s: %s", method, type(error).__name__, error)
        await context.abort(code, str(error))
    span.record_exception(error)  # a bug: worth its traceback
    log.exception("%s: unexpected error", method)
    await context.abort(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")


def _wrap_unary_response(
    behavior: Callable[..., Awaitable[Any]], method: str
) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        span = _enter_request(context, method)
        # _abort sets the status; recording the exception would format a traceback
        # (~0.5 ms) for every NotFound, which clients ask about all the time.
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                await _abort(context, e, method, span)

    return handler


def _wrap_stream_response(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):
        # A coroutine that writes with context.write(): same shape as unary.
        return _wrap_unary_response(behavior, method)

    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        span = _enter_request(context, method)
        responses = behavior(request, context)
        try:
            while True:
                # The span is current only while the handler runs, never across a
                # yield: gRPC may close this generator from another context.
                with trace.use_span(
                    span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                ):
                    try:
                        item = await anext(responses)
                    except StopAsyncIteration:
                        return
                    except grpc.aio.AbortError:
                        raise
                    except Exception as e:
                        await _abort(context, e, method, span)
                yield item
        finally:
            await responses.aclose()
            span.end()

    return handler


if TYPE_CHECKING:  # generic in the stubs only
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class RequestContextInterceptor(_ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return handler  # type: ignore[return-value]
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return handler  # polled constantly; no context and no spans
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_response(handler.unary_unary, method), **kw
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, method), **kw
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, method), **kw
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream_response(handler.stream_stream, method), **kw
            )
        return handler


def server_options(max_recv: int, max_send: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_recv),
        ("grpc.max_send_message_length", max_send),
        # Two processes must never share a TCP port by accident.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ]


def prepare_unix_socket(path: str) -> None:
    """Create the socket's directory and remove a stale socket left by a crash."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o711, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    os.unlink(path)


class RpcServer:
    """One grpc.aio server with health checking, tracing and berth's error mapping."""

    def __init__(
        self,
        *,
        max_recv_message_size: int = 16 << 20,
        max_send_message_size: int = 16 << 20,
        extra_options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.health = HealthServicer()
        self._service_names: list[str] = []
        self._addresses: list[str] = []
        self._server = grpc.aio.server(
            interceptors=[RequestContextInterceptor()],
            options=[
                *server_options(max_recv_message_size, max_send_message_size),
                *extra_options,
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

    @property
    def grpc_server(self) -> grpc.aio.Server:
        return self._server

    def add(
        self, service_name: str, register: Callable[[Any, grpc.aio.Server], None], servicer: Any
    ) -> None:
        """Register ``servicer`` with its generated ``add_XServicer_to_server`` function."""
        register(servicer, self._server)
        self._service_names.append(service_name)

    def listen(self, address: str) -> None:
        """Listen on a unix socket path (or ``unix:`` URL) or on ``host:port``."""
        path = socket_path(address)
        if path is not None:
            prepare_unix_socket(path)
            self._server.add_insecure_port(f"unix://{path}")
        else:
            self._server.add_insecure_port(address)
        self._addresses.append(address)

    async def start(self) -> None:
        await self._server.start()
        for name in ("", *self._service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        for address in self._addresses:
            path = socket_path(address)
            if path is not None:
                os.chmod(path, 0o660)
        log.info("serving %s on %s", ", ".join(self._service_names), ", ".join(self._addresses))

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let running ones finish for ``grace`` seconds, then close."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        for address in self._addresses:
            path = socket_path(address)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()
