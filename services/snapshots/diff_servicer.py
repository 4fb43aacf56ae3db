"""``containerd.services.diff.v1.Diff`` over the differ."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from services.snapshots.differ import Differ
from shared.api.containerd.services.diff.v1 import diff_pb2 as api
from shared.api.containerd.services.diff.v1 import diff_pb2_grpc
from shared.diff import Descriptor
from shared.errors import InvalidArgument
from shared.proxy.diff import descriptor_to_proto
from shared.proxy.snapshots import mount_from_proto

Context = grpc.aio.ServicerContext[Any, Any]


class DiffServicer(diff_pb2_grpc.DiffServicer):
    def __init__(self, differ: Differ) -> None:
        self._differ = differ

    async def Apply(self, request: api.ApplyRequest, context: Context) -> api.ApplyResponse:
        if not request.HasField("diff") or not request.diff.digest:
            raise InvalidArgument("apply needs the descriptor of the layer to apply")
        desc = Descriptor(request.diff.media_type, request.diff.digest, request.diff.size)
        mounts = [mount_from_proto(m) for m in request.mounts]
        applied = await asyncio.to_thread(self._differ.apply, desc, mounts)
        return api.ApplyResponse(applied=descriptor_to_proto(applied))

    async def Diff(self, request: api.DiffRequest, context: Context) -> api.DiffResponse:
        left = [mount_from_proto(m) for m in request.left]
        right = [mount_from_proto(m) for m in request.right]
        if not right:
            raise InvalidArgument("diff needs the mounts of the changed snapshot (right)")
        desc = await asyncio.to_thread(
            self._differ.diff, left, right, request.media_type, request.ref, dict(request.labels)
        )
        return api.DiffResponse(diff=descriptor_to_proto(desc))
