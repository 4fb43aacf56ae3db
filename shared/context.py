"""Per-request metadata carried in ``contextvars``.

One server interceptor fills these from gRPC metadata; one client interceptor
and the event publisher read them. Handlers never parse metadata themselves.
The namespace and lease travel as containerd's ``containerd-namespace`` and
``containerd-lease`` metadata keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from shared import identifiers
from shared.errors import FailedPrecondition

NAMESPACE_KEY = "containerd-namespace"
LEASE_KEY = "containerd-lease"

namespace_var: ContextVar[str | None] = ContextVar("berth_namespace", default=None)
lease_var: ContextVar[str | None] = ContextVar("berth_lease", default=None)


def current_namespace() -> str | None:
    return namespace_var.get()


def require_namespace() -> str:
    """The request's namespace, validated; as containerd's ``NamespaceRequired``.

    Missing or empty is FailedPrecondition; a malformed name is InvalidArgument.
    """
    namespace = namespace_var.get()
    if not namespace:
        raise FailedPrecondition(
            "namespace is required: set the containerd-namespace gRPC metadata "
            "(ctr -n / --namespace)"
        )
    return identifiers.validate(namespace, what="namespace")


def current_lease() -> str | None:
    return lease_var.get() or None


@contextlib.contextmanager
def using(namespace: str | None = None, lease: str | None = None) -> Iterator[None]:
    """Run a block with the given namespace and lease as the request context."""
    ns_token = namespace_var.set(namespace)
    lease_token = lease_var.set(lease)
    try:
        yield
    finally:
        lease_var.reset(lease_token)
        namespace_var.reset(ns_token)
