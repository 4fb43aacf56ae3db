"""Direct access to every gRPC service behind the socket, for what the client does not wrap.

``client.api.<service>`` is the generated stub of containerd's API (the request
and response classes live in ``shared.api``). Calls carry the client's
namespace and lease like every other call, and fail with :mod:`berth.errors`
classes, not ``grpc.RpcError``::

    from shared.api.containerd.services.content.v1 import content_pb2
    info = client.api.content.Info(content_pb2.InfoRequest(digest=digest)).info
"""

from __future__ import annotations

from functools import cached_property

import grpc

from shared.api.containerd.services.containers.v1 import containers_pb2_grpc
from shared.api.containerd.services.content.v1 import content_pb2_grpc
from shared.api.containerd.services.diff.v1 import diff_pb2_grpc
from shared.api.containerd.services.events.v1 import events_pb2_grpc
from shared.api.containerd.services.images.v1 import images_pb2_grpc
from shared.api.containerd.services.introspection.v1 import introspection_pb2_grpc
from shared.api.containerd.services.leases.v1 import leases_pb2_grpc
from shared.api.containerd.services.namespaces.v1 import namespace_pb2_grpc
from shared.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from shared.api.containerd.services.streaming.v1 import streaming_pb2_grpc
from shared.api.containerd.services.tasks.v1 import tasks_pb2_grpc
from shared.api.containerd.services.transfer.v1 import transfer_pb2_grpc
from shared.api.containerd.services.version.v1 import version_pb2_grpc


class Services:
    """One stub per service, made on first use."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    @cached_property
    def content(self) -> content_pb2_grpc.ContentStub:
        return content_pb2_grpc.ContentStub(self._channel)

    @cached_property
    def images(self) -> images_pb2_grpc.ImagesStub:
        return images_pb2_grpc.ImagesStub(self._channel)

    @cached_property
    def snapshots(self) -> snapshots_pb2_grpc.SnapshotsStub:
        return snapshots_pb2_grpc.SnapshotsStub(self._channel)

    @cached_property
    def diff(self) -> diff_pb2_grpc.DiffStub:
        return diff_pb2_grpc.DiffStub(self._channel)

    @cached_property
    def containers(self) -> containers_pb2_grpc.ContainersStub:
        return containers_pb2_grpc.ContainersStub(self._channel)

    @cached_property
    def tasks(self) -> tasks_pb2_grpc.TasksStub:
        return tasks_pb2_grpc.TasksStub(self._channel)

    @cached_property
    def namespaces(self) -> namespace_pb2_grpc.NamespacesStub:
        return namespace_pb2_grpc.NamespacesStub(self._channel)

    @cached_property
    def leases(self) -> leases_pb2_grpc.LeasesStub:
        return leases_pb2_grpc.LeasesStub(self._channel)

    @cached_property
    def events(self) -> events_pb2_grpc.EventsStub:
        return events_pb2_grpc.EventsStub(self._channel)

    @cached_property
    def introspection(self) -> introspection_pb2_grpc.IntrospectionStub:
        return introspection_pb2_grpc.IntrospectionStub(self._channel)

    @cached_property
    def version(self) -> version_pb2_grpc.VersionStub:
        return version_pb2_grpc.VersionStub(self._channel)

    @cached_property
    def transfer(self) -> transfer_pb2_grpc.TransferStub:
        return transfer_pb2_grpc.TransferStub(self._channel)

    @cached_property
    def streaming(self) -> streaming_pb2_grpc.StreamingStub:
        return streaming_pb2_grpc.StreamingStub(self._channel)
