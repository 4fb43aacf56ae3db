"""The snapshotter contract over gRPC (containerd's snapshots/proxy), plus its wire mapping.

Used to reach the snapshots service from other services and clients, and by
the snapshots service itself for ``[proxy_plugins]`` snapshotters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from shared.api.containerd.services.snapshots.v1 import snapshots_pb2 as api
from shared.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from shared.api.containerd.types import mount_pb2
from shared.pbutil import nanos, timestamp
from shared.rpc.status import to_native
from shared.snapshots import Info, Kind, Mount, Usage


def mount_to_proto(mount: Mount) -> mount_pb2.Mount:
    return mount_pb2.Mount(
        type=mount.type, source=mount.source, target=mount.target, options=list(mount.options)
    )


def mount_from_proto(msg: mount_pb2.Mount) -> Mount:
    return Mount(msg.type, msg.source, msg.target, tuple(msg.options))


def info_to_proto(info: Info) -> api.Info:
    return api.Info(
        name=info.name,
        parent=info.parent,
        kind=int(info.kind),  # type: ignore[arg-type]
        created_at=timestamp(info.created_at),
        updated_at=timestamp(info.updated_at),
        labels=dict(info.labels),
    )


def info_from_proto(msg: api.Info) -> Info:
    return Info(
        name=msg.name,
        parent=msg.parent,
        kind=Kind(msg.kind),
        created_at=nanos(msg.created_at),
        updated_at=nanos(msg.updated_at),
        labels=dict(msg.labels),
    )


class SnapshotterProxy:
    """One snapshotter of a remote snapshots service (``snapshotter`` names it)."""

    def __init__(self, channel: grpc.Channel, snapshotter: str) -> None:
        self._stub = snapshots_pb2_grpc.SnapshotsStub(channel)
        self._name = snapshotter

    @property
    def name(self) -> str:
        return self._name

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def stat(self, key: str) -> Info:
        reply = self._call(
            self._stub.Stat, api.StatSnapshotRequest(snapshotter=self._name, key=key)
        )
        return info_from_proto(reply.info)

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        request = api.UpdateSnapshotRequest(
            snapshotter=self._name,
            info=info_to_proto(info),
            update_mask=field_mask_pb2.FieldMask(paths=list(fieldpaths)),
        )
        return info_from_proto(self._call(self._stub.Update, request).info)

    def usage(self, key: str) -> Usage:
        reply = self._call(self._stub.Usage, api.UsageRequest(snapshotter=self._name, key=key))
        return Usage(reply.size, reply.inodes)

    def mounts(self, key: str) -> list[Mount]:
        reply = self._call(self._stub.Mounts, api.MountsRequest(snapshotter=self._name, key=key))
        return [mount_from_proto(m) for m in reply.mounts]

    def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        request = api.PrepareSnapshotRequest(
            snapshotter=self._name, key=key, parent=parent, labels=dict(labels or {})
        )
        return [mount_from_proto(m) for m in self._call(self._stub.Prepare, request).mounts]

    def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        request = api.ViewSnapshotRequest(
            snapshotter=self._name, key=key, parent=parent, labels=dict(labels or {})
        )
        return [mount_from_proto(m) for m in self._call(self._stub.View, request).mounts]

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        request = api.CommitSnapshotRequest(
            snapshotter=self._name, name=name, key=key, labels=dict(labels or {})
        )
        self._call(self._stub.Commit, request)

    def remove(self, key: str) -> None:
        self._call(self._stub.Remove, api.RemoveSnapshotRequest(snapshotter=self._name, key=key))

    def walk(self, filters: Sequence[str] = ()) -> Iterator[Info]:
        request = api.ListSnapshotsRequest(snapshotter=self._name, filters=list(filters))
        try:
            for reply in self._stub.List(request):
                for info in reply.info:
                    yield info_from_proto(info)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def cleanup(self) -> None:
        self._call(self._stub.Cleanup, api.CleanupRequest(snapshotter=self._name))
