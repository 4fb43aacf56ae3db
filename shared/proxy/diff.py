"""The differ contract over gRPC (containerd's diff/proxy), plus its wire mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from shared.api.containerd.services.diff.v1 import diff_pb2 as api
from shared.api.containerd.services.diff.v1 import diff_pb2_grpc
from shared.api.containerd.types import descriptor_pb2
from shared.diff import Descriptor
from shared.proxy.snapshots import mount_to_proto
from shared.rpc.status import to_native
from shared.snapshots import Mount


def descriptor_to_proto(desc: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(
        media_type=desc.media_type,
        digest=desc.digest,
        size=desc.size,
        annotations=dict(desc.annotations),
    )


def descriptor_from_proto(msg: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(msg.media_type, msg.digest, msg.size, dict(msg.annotations))


class DiffProxy:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = diff_pb2_grpc.DiffStub(channel)

    def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        request = api.ApplyRequest(
            diff=descriptor_to_proto(desc), mounts=[mount_to_proto(m) for m in mounts]
        )
        try:
            return descriptor_from_proto(self._stub.Apply(request).applied)
        except grpc.RpcError as e:
            raise to_native(e) from e

    def diff(
        self,
        left: Sequence[Mount],
        right: Sequence[Mount],
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        request = api.DiffRequest(
            left=[mount_to_proto(m) for m in left],
            right=[mount_to_proto(m) for m in right],
            media_type=media_type,
            ref=ref,
            labels=dict(labels or {}),
        )
        try:
            return descriptor_from_proto(self._stub.Diff(request).diff)
        except grpc.RpcError as e:
            raise to_native(e) from e
