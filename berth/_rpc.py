"""The client's gRPC plumbing: request context in, berth errors out.

Every call made through a :class:`~berth.Client` carries the namespace (the
client's, or the one of an enclosing :func:`berth.namespace` block) and the
lease of an enclosing :meth:`~berth.Client.lease` block. They are handed to
``shared.context`` for the duration of the call, where the shared channel's
interceptor turns them into containerd's ``containerd-namespace`` and
``containerd-lease`` metadata (with the trace context).

Calls through :class:`Errors` raise :mod:`berth.errors` classes instead of
``grpc.RpcError``, for unary calls and while iterating streams alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import grpc

from shared import context as request_context
from shared import identifiers
from shared.errors import BerthError, Unavailable
from shared.rpc.status import to_native

_namespace: ContextVar[str | None] = ContextVar("berth_client_namespace", default=None)
_lease: ContextVar[str | None] = ContextVar("berth_client_lease", default=None)


@contextlib.contextmanager
def namespace(name: str) -> Iterator[str]:
    """Make every call in the block use namespace ``name``, whatever the client's default
    (containerd's ``namespaces.WithNamespace``)::

        with berth.namespace("docker"):
            client.new_container("id", ...)
    """
    identifiers.validate(name, what="namespace")
    token = _namespace.set(name)
    try:
        yield name
    finally:
        _namespace.reset(token)


def current_namespace(default: str) -> str:
    return _namespace.get() or default


def current_lease() -> str | None:
    return _lease.get()


@contextlib.contextmanager
def using_lease(lease_id: str | None) -> Iterator[None]:
    token = _lease.set(lease_id)
    try:
        yield
    finally:
        _lease.reset(token)


# What gRPC says when nothing answers at the address. A gateway that is up but whose
# backend process is down also answers UNAVAILABLE, and so does a registry that cannot be
# reached during a pull: those keep their own message.
_CONNECT_FAILURE = "failed to connect to all addresses"


def _connect_failure(error: grpc.RpcError) -> bool:
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else "") or ""
    return code == grpc.StatusCode.UNAVAILABLE and _CONNECT_FAILURE in details


class Unreachable(Unavailable):
    """Nothing answers at the client's address: no suite runs there (or the socket is not
    ours to open). An :class:`Unavailable`, so that one ``except`` catches both; tools tell
    this one apart to say where they looked (``address``) rather than what failed."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


def native_error(error: grpc.RpcError, address: str) -> BerthError:
    """The berth error for a failed call; a suite that cannot be reached says where we looked."""
    if _connect_failure(error):
        native: BerthError = Unreachable(
            f"cannot reach berth at {address}: is berthd running there? "
            f"(set BERTH_ADDRESS or pass Client(address=...)) [{error.details()}]",
            address,
        )
        native.__cause__ = error
        return native
    return to_native(error)


def hint_unavailable(error: BerthError, address: str) -> BerthError:
    """``error`` as :func:`native_error` would have made it (for errors the shared proxies
    translated themselves)."""
    cause = error.__cause__
    if isinstance(error, Unavailable) and isinstance(cause, grpc.RpcError):
        return native_error(cause, address)
    return error


class _Outcome:
    """A unary call's result whose ``result()`` raises berth errors."""

    def __init__(self, inner: Any, translate: Callable[[grpc.RpcError], BerthError]) -> None:
        self._inner = inner
        self._translate = translate

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._inner.result(timeout)
        except grpc.RpcError as e:
            raise self._translate(e) from e

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Stream:
    """A response stream whose iteration raises berth errors."""

    def __init__(self, inner: Any, translate: Callable[[grpc.RpcError], BerthError]) -> None:
        self._inner = inner
        self._translate = translate

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._inner)
        except grpc.RpcError as e:
            raise self._translate(e) from e

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RequestContext(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Sets ``shared.context`` (namespace, lease) while a call starts; the shared channel's
    own interceptor, called inside, turns it into metadata."""

    def __init__(self, default_namespace: str) -> None:
        self._default = default_namespace

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        ns = current_namespace(self._default)
        with request_context.using(namespace=ns, lease=current_lease()):
            return continuation(details, request)

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


class Errors(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Turns failed calls into berth errors (containerd's ``errdefs.FromGRPC``)."""

    def __init__(self, address: str) -> None:
        self._address = address

    def _translate(self, error: grpc.RpcError) -> BerthError:
        return native_error(error, self._address)

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return _Outcome(continuation(client_call_details, request), self._translate)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return _Stream(continuation(client_call_details, request), self._translate)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return _Outcome(continuation(client_call_details, request_iterator), self._translate)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return _Stream(continuation(client_call_details, request_iterator), self._translate)
