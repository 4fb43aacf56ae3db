"""``containerd.services.snapshots.v1.Snapshots`` over the loaded snapshotters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from shared.api.containerd.events import snapshot_pb2 as events
from shared.api.containerd.services.snapshots.v1 import snapshots_pb2 as api
from shared.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from shared.errors import InvalidArgument
from shared.events.outbox import Outbox
from shared.proxy.snapshots import info_from_proto, info_to_proto, mount_to_proto
from shared.snapshots import Snapshotter

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

LIST_BATCH = 100


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


class SnapshotsServicer(snapshots_pb2_grpc.SnapshotsServicer):
    def __init__(self, snapshotters: Mapping[str, Snapshotter], outbox: Outbox) -> None:
        self._snapshotters = snapshotters
        self._outbox = outbox

    def _get(self, name: str) -> Snapshotter:
        # containerd's messages, which clients show as they are.
        if not name:
            raise InvalidArgument("snapshotter argument missing")
        snapshotter = self._snapshotters.get(name)
        if snapshotter is None:
            raise InvalidArgument(f"snapshotter not loaded: {name}")
        return snapshotter

    async def Prepare(
        self, request: api.PrepareSnapshotRequest, context: Context
    ) -> api.PrepareSnapshotResponse:
        sn = self._get(request.snapshotter)
        mounts = await _run(sn.prepare, request.key, request.parent, dict(request.labels))
        self._outbox.put(
            "/snapshot/prepare",
            events.SnapshotPrepare(key=request.key, parent=request.parent, snapshotter=sn.name),
        )
        return api.PrepareSnapshotResponse(mounts=[mount_to_proto(m) for m in mounts])

    async def View(
        self, request: api.ViewSnapshotRequest, context: Context
    ) -> api.ViewSnapshotResponse:
        sn = self._get(request.snapshotter)
        mounts = await _run(sn.view, request.key, request.parent, dict(request.labels))
        return api.ViewSnapshotResponse(mounts=[mount_to_proto(m) for m in mounts])

    async def Mounts(self, request: api.MountsRequest, context: Context) -> api.MountsResponse:
        sn = self._get(request.snapshotter)
        mounts = await _run(sn.mounts, request.key)
        return api.MountsResponse(mounts=[mount_to_proto(m) for m in mounts])

    async def Commit(self, request: api.CommitSnapshotRequest, context: Context) -> empty_pb2.Empty:
        sn = self._get(request.snapshotter)
        await _run(sn.commit, request.name, request.key, dict(request.labels))
        self._outbox.put(
            "/snapshot/commit",
            events.SnapshotCommit(key=request.key, name=request.name, snapshotter=sn.name),
        )
        return empty_pb2.Empty()

    async def Remove(self, request: api.RemoveSnapshotRequest, context: Context) -> empty_pb2.Empty:
        sn = self._get(request.snapshotter)
        await _run(sn.remove, request.key)
        self._outbox.put(
            "/snapshot/remove", events.SnapshotRemove(key=request.key, snapshotter=sn.name)
        )
        return empty_pb2.Empty()

    async def Stat(
        self, request: api.StatSnapshotRequest, context: Context
    ) -> api.StatSnapshotResponse:
        sn = self._get(request.snapshotter)
        return api.StatSnapshotResponse(info=info_to_proto(await _run(sn.stat, request.key)))

    async def Update(
        self, request: api.UpdateSnapshotRequest, context: Context
    ) -> api.UpdateSnapshotResponse:
        sn = self._get(request.snapshotter)
        info = await _run(sn.update, info_from_proto(request.info), list(request.update_mask.paths))
        return api.UpdateSnapshotResponse(info=info_to_proto(info))

    async def List(
        self, request: api.ListSnapshotsRequest, context: Context
    ) -> AsyncIterator[api.ListSnapshotsResponse]:
        sn = self._get(request.snapshotter)
        infos = await _run(lambda: list(sn.walk(list(request.filters))))
        for start in range(0, len(infos), LIST_BATCH):
            batch = infos[start : start + LIST_BATCH]
            yield api.ListSnapshotsResponse(info=[info_to_proto(i) for i in batch])

    async def Usage(self, request: api.UsageRequest, context: Context) -> api.UsageResponse:
        sn = self._get(request.snapshotter)
        usage = await _run(sn.usage, request.key)
        return api.UsageResponse(size=usage.size, inodes=usage.inodes)

    async def Cleanup(self, request: api.CleanupRequest, context: Context) -> empty_pb2.Empty:
        await _run(self._get(request.snapshotter).cleanup)
        return empty_pb2.Empty()
