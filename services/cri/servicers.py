"""``runtime.v1.ImageService`` and ``runtime.v1.RuntimeService`` over the CRI core.

Blocking client calls run in threads. RPCs berth does not serve yet answer
``UNIMPLEMENTED`` saying so, as containerd 1.7 does for ``CheckpointContainer``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from services.cri.images import Credentials, CriImage, CriImages, verbose_info
from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.api.cri.runtime.v1 import api_pb2_grpc
from shared.errors import Unimplemented
from shared.version import BERTH_VERSION

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

RUNTIME_NAME = "berth"
RUNTIME_API_VERSION = "v1"
# What kubelet's Version call gets for `version` (the CRI API's, as containerd answers).
KUBE_API_VERSION = "0.1.0"
STREAM_BATCH = 100


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def image_to_proto(image: CriImage) -> cri.Image:
    msg = cri.Image(
        id=image.id,
        repo_tags=image.repo_tags,
        repo_digests=image.repo_digests,
        size=image.size,
        username=image.username,
        spec=cri.ImageSpec(image=image.id),
        pinned=image.pinned,
    )
    if image.uid is not None:
        msg.uid.value = image.uid
    return msg


def credentials_from_proto(auth: cri.AuthConfig) -> Credentials | None:
    if not auth.ByteSize():
        return None
    return Credentials(
        auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token
    )


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: CriImages) -> None:
        self._images = images

    async def ListImages(
        self, request: cri.ListImagesRequest, context: Context
    ) -> cri.ListImagesResponse:
        found = await _run(self._images.list, request.filter.image.image)
        return cri.ListImagesResponse(images=[image_to_proto(i) for i in found])

    async def StreamImages(
        self, request: cri.StreamImagesRequest, context: Context
    ) -> AsyncIterator[cri.StreamImagesResponse]:
        found = await _run(self._images.list, request.filter.image.image)
        for start in range(0, len(found), STREAM_BATCH):
            batch = found[start : start + STREAM_BATCH]
            yield cri.StreamImagesResponse(images=[image_to_proto(i) for i in batch])

    async def ImageStatus(
        self, request: cri.ImageStatusRequest, context: Context
    ) -> cri.ImageStatusResponse:
        found = await _run(self._images.status, request.image.image)
        if found is None:
            return cri.ImageStatusResponse()  # absent is no error in CRI
        info = verbose_info(found) if request.verbose else {}
        return cri.ImageStatusResponse(image=image_to_proto(found), info=info)

    async def PullImage(
        self, request: cri.PullImageRequest, context: Context
    ) -> cri.PullImageResponse:
        ref = await _run(
            self._images.pull, request.image.image, credentials_from_proto(request.auth)
        )
        return cri.PullImageResponse(image_ref=ref)

    async def RemoveImage(
        self, request: cri.RemoveImageRequest, context: Context
    ) -> cri.RemoveImageResponse:
        await _run(self._images.remove, request.image.image)
        return cri.RemoveImageResponse()

    async def ImageFsInfo(
        self, request: cri.ImageFsInfoRequest, context: Context
    ) -> cri.ImageFsInfoResponse:
        mountpoint, used, inodes = await _run(self._images.filesystem_usage)
        usage = cri.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=cri.FilesystemIdentifier(mountpoint=mountpoint),
            used_bytes=cri.UInt64Value(value=used),
            inodes_used=cri.UInt64Value(value=inodes),
        )
        return cri.ImageFsInfoResponse(image_filesystems=[usage])


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    """Version and Status; the pod and container RPCs are not served yet."""

    def __init__(self, network_ready: Callable[[], tuple[bool, str]]) -> None:
        self._network_ready = network_ready

    async def Version(self, request: cri.VersionRequest, context: Context) -> cri.VersionResponse:
        return cri.VersionResponse(
            version=KUBE_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=BERTH_VERSION,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: cri.StatusRequest, context: Context) -> cri.StatusResponse:
        network_ok, network_why = await _run(self._network_ready)
        conditions = [
            # Honest until pods run: kubelet schedules nothing on a runtime that is not ready.
            cri.RuntimeCondition(
                type="RuntimeReady",
                status=False,
                reason="PodSandboxesUnsupported",
                message="berth's CRI serves images; pod sandboxes and containers are not built yet",
            ),
            cri.RuntimeCondition(
                type="NetworkReady",
                status=network_ok,
                reason="" if network_ok else "NetworkPluginNotReady",
                message=network_why,
            ),
        ]
        return cri.StatusResponse(
            status=cri.RuntimeStatus(conditions=conditions),
            runtime_handlers=[cri.RuntimeHandler(name="")],
        )


def _unimplemented(name: str) -> Callable[..., Any]:
    async def method(self: Any, request: Any, context: Context) -> Any:
        raise Unimplemented(f"CRI {name}: berth does not run pods yet")

    method.__name__ = name
    return method


# Every RuntimeService RPC the class above does not define answers UNIMPLEMENTED clearly
# (the generated base would raise NotImplementedError, an UNKNOWN to the caller).
for _name in cri.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name:
    if _name not in RuntimeServicer.__dict__:
        setattr(RuntimeServicer, _name, _unimplemented(_name))
