"""Leases: keep what a piece of work creates from garbage collection until it is done.

::

    with client.lease() as lease:          # calls in the block carry containerd-lease
        image = client.pull(ref, unpack=False)
        ...                                # nothing of it is collected meanwhile
    # the lease is gone; what nothing else refers to may now be collected

A lease expires on its own (``expire``, 24 hours by default) should its holder
never delete it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from berth import _rpc
from shared.api.containerd.services.leases.v1 import leases_pb2
from shared.errors import NotFound
from shared.images import LABEL_GC_EXPIRE

if TYPE_CHECKING:
    from berth.client import Client


@dataclass(frozen=True)
class Resource:
    """A resource held by a lease: ``type`` is ``content`` (``id`` a digest), ``ingests``
    (a ref) or ``snapshots/<snapshotter>`` (a key)."""

    id: str
    type: str


@dataclass
class Lease:
    client: Client = field(repr=False)
    id: str
    created_at: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def resources(self) -> list[Resource]:
        reply = self.client.api.leases.ListResources(leases_pb2.ListResourcesRequest(id=self.id))
        return [Resource(r.id, r.type) for r in reply.resources]

    def add_resource(self, resource: Resource) -> None:
        self.client.api.leases.AddResource(
            leases_pb2.AddResourceRequest(
                id=self.id, resource=leases_pb2.Resource(id=resource.id, type=resource.type)
            )
        )

    def delete_resource(self, resource: Resource) -> None:
        self.client.api.leases.DeleteResource(
            leases_pb2.DeleteResourceRequest(
                id=self.id, resource=leases_pb2.Resource(id=resource.id, type=resource.type)
            )
        )

    @contextlib.contextmanager
    def use(self) -> Iterator[Lease]:
        """Make the calls in the block carry this lease (``containerd-lease``), so that what
        they create is its to hold; the lease goes on after the block (unlike
        :meth:`Client.lease`), until deleted or expired."""
        with _rpc.using_lease(self.id):
            yield self

    def delete(self, *, sync: bool = False) -> None:
        """End the lease; ``sync`` waits for the garbage collection it allows."""
        self.client.api.leases.Delete(leases_pb2.DeleteRequest(id=self.id, sync=sync))


def _lease(client: Client, msg: leases_pb2.Lease) -> Lease:
    from berth.client import to_datetime

    return Lease(client, msg.id, to_datetime(msg.created_at), dict(msg.labels))


def create(
    client: Client,
    lease_id: str | None,
    *,
    expire: timedelta | None,
    labels: Mapping[str, str] | None,
) -> Lease:
    all_labels = dict(labels or {})
    if expire is not None:
        all_labels[LABEL_GC_EXPIRE] = (datetime.now(UTC) + expire).strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = client.api.leases.Create(
        leases_pb2.CreateRequest(id=lease_id or f"berth-{secrets.token_hex(8)}", labels=all_labels)
    )
    return _lease(client, reply.lease)


def list_leases(client: Client, filters: Sequence[str]) -> list[Lease]:
    reply = client.api.leases.List(leases_pb2.ListRequest(filters=filters))
    return [_lease(client, msg) for msg in reply.leases]


@contextlib.contextmanager
def lease_block(
    client: Client,
    lease_id: str | None,
    *,
    expire: timedelta | None,
    labels: Mapping[str, str] | None,
) -> Iterator[Lease]:
    lease = create(client, lease_id, expire=expire, labels=labels)
    try:
        with _rpc.using_lease(lease.id):
            yield lease
    finally:
        with contextlib.suppress(NotFound):
            lease.delete()
