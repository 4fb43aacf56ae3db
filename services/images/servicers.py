"""``Images``, ``Namespaces`` and ``Leases`` over their records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from services.images.lease_store import LeaseRecords
from services.images.namespace_store import NamespaceRecords
from shared.api.containerd.events import namespace_pb2 as namespace_events
from shared.api.containerd.services.images.v1 import images_pb2 as images_api
from shared.api.containerd.services.images.v1 import images_pb2_grpc
from shared.api.containerd.services.leases.v1 import leases_pb2 as leases_api
from shared.api.containerd.services.leases.v1 import leases_pb2_grpc
from shared.api.containerd.services.namespaces.v1 import namespace_pb2 as ns_api
from shared.api.containerd.services.namespaces.v1 import namespace_pb2_grpc
from shared.errors import InvalidArgument
from shared.events.outbox import Outbox
from shared.images import Image, ImageStore, Lease, Resource
from shared.pbutil import timestamp
from shared.proxy.diff import descriptor_from_proto, descriptor_to_proto

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
GarbageCollect = Callable[[], Awaitable[object]]


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def image_to_proto(image: Image) -> images_api.Image:
    return images_api.Image(
        name=image.name,
        labels=dict(image.labels),
        target=descriptor_to_proto(image.target),
        created_at=timestamp(image.created_at),
        updated_at=timestamp(image.updated_at),
    )


def image_from_proto(msg: images_api.Image) -> Image:
    return Image(msg.name, descriptor_from_proto(msg.target), dict(msg.labels))


def lease_to_proto(lease: Lease) -> leases_api.Lease:
    return leases_api.Lease(
        id=lease.id, created_at=timestamp(lease.created_at), labels=dict(lease.labels)
    )


class ImagesServicer(images_pb2_grpc.ImagesServicer):
    def __init__(self, records: ImageStore, collect: GarbageCollect) -> None:
        self._records = records  # announces its changes (services.images.image_events)
        self._collect = collect

    async def Get(
        self, request: images_api.GetImageRequest, context: Context
    ) -> images_api.GetImageResponse:
        return images_api.GetImageResponse(
            image=image_to_proto(await _run(self._records.get, request.name))
        )

    async def List(
        self, request: images_api.ListImagesRequest, context: Context
    ) -> images_api.ListImagesResponse:
        found = await _run(self._records.list, list(request.filters))
        return images_api.ListImagesResponse(images=[image_to_proto(i) for i in found])

    async def Create(
        self, request: images_api.CreateImageRequest, context: Context
    ) -> images_api.CreateImageResponse:
        image = await _run(self._records.create, image_from_proto(request.image))
        return images_api.CreateImageResponse(image=image_to_proto(image))

    async def Update(
        self, request: images_api.UpdateImageRequest, context: Context
    ) -> images_api.UpdateImageResponse:
        image = await _run(
            self._records.update, image_from_proto(request.image), list(request.update_mask.paths)
        )
        return images_api.UpdateImageResponse(image=image_to_proto(image))

    async def Delete(
        self, request: images_api.DeleteImageRequest, context: Context
    ) -> empty_pb2.Empty:
        await _run(self._records.delete, request.name)
        if request.sync:
            await self._collect()
        return empty_pb2.Empty()


class NamespacesServicer(namespace_pb2_grpc.NamespacesServicer):
    def __init__(self, records: NamespaceRecords, outbox: Outbox) -> None:
        self._records = records
        self._outbox = outbox

    async def Get(
        self, request: ns_api.GetNamespaceRequest, context: Context
    ) -> ns_api.GetNamespaceResponse:
        ns = await _run(self._records.get, request.name)
        return ns_api.GetNamespaceResponse(
            namespace=ns_api.Namespace(name=ns.name, labels=dict(ns.labels))
        )

    async def List(
        self, request: ns_api.ListNamespacesRequest, context: Context
    ) -> ns_api.ListNamespacesResponse:
        found = await _run(self._records.list)
        return ns_api.ListNamespacesResponse(
            namespaces=[ns_api.Namespace(name=n.name, labels=dict(n.labels)) for n in found]
        )

    async def Create(
        self, request: ns_api.CreateNamespaceRequest, context: Context
    ) -> ns_api.CreateNamespaceResponse:
        ns = await _run(
            self._records.create, request.namespace.name, dict(request.namespace.labels)
        )
        self._outbox.put(
            "/namespaces/create",
            namespace_events.NamespaceCreate(name=ns.name, labels=dict(ns.labels)),
            namespace=ns.name,
        )
        return ns_api.CreateNamespaceResponse(
            namespace=ns_api.Namespace(name=ns.name, labels=dict(ns.labels))
        )

    async def Update(
        self, request: ns_api.UpdateNamespaceRequest, context: Context
    ) -> ns_api.UpdateNamespaceResponse:
        ns = await _run(
            self._records.update,
            request.namespace.name,
            dict(request.namespace.labels),
            list(request.update_mask.paths),
        )
        self._outbox.put(
            "/namespaces/update",
            namespace_events.NamespaceUpdate(name=ns.name, labels=dict(ns.labels)),
            namespace=ns.name,
        )
        return ns_api.UpdateNamespaceResponse(
            namespace=ns_api.Namespace(name=ns.name, labels=dict(ns.labels))
        )

    async def Delete(
        self, request: ns_api.DeleteNamespaceRequest, context: Context
    ) -> empty_pb2.Empty:
        await _run(self._records.delete, request.name)
        self._outbox.put(
            "/namespaces/delete",
            namespace_events.NamespaceDelete(name=request.name),
            namespace=request.name,
        )
        return empty_pb2.Empty()


class LeasesServicer(leases_pb2_grpc.LeasesServicer):
    def __init__(self, records: LeaseRecords, collect: GarbageCollect) -> None:
        self._records = records
        self._collect = collect

    async def Create(
        self, request: leases_api.CreateRequest, context: Context
    ) -> leases_api.CreateResponse:
        lease = await _run(self._records.create, request.id, dict(request.labels))
        return leases_api.CreateResponse(lease=lease_to_proto(lease))

    async def Delete(self, request: leases_api.DeleteRequest, context: Context) -> empty_pb2.Empty:
        await _run(self._records.delete, request.id)
        if request.sync:
            await self._collect()
        return empty_pb2.Empty()

    async def List(
        self, request: leases_api.ListRequest, context: Context
    ) -> leases_api.ListResponse:
        found = await _run(self._records.list, list(request.filters))
        return leases_api.ListResponse(leases=[lease_to_proto(lease) for lease in found])

    @staticmethod
    def _resource(msg: leases_api.Resource) -> Resource:
        if not msg.type:
            raise InvalidArgument("resource type must not be empty")
        return Resource(msg.id, msg.type)

    async def AddResource(
        self, request: leases_api.AddResourceRequest, context: Context
    ) -> empty_pb2.Empty:
        await _run(self._records.add_resource, request.id, self._resource(request.resource))
        return empty_pb2.Empty()

    async def DeleteResource(
        self, request: leases_api.DeleteResourceRequest, context: Context
    ) -> empty_pb2.Empty:
        await _run(self._records.delete_resource, request.id, self._resource(request.resource))
        return empty_pb2.Empty()

    async def ListResources(
        self, request: leases_api.ListResourcesRequest, context: Context
    ) -> leases_api.ListResourcesResponse:
        found = await _run(self._records.list_resources, request.id)
        return leases_api.ListResourcesResponse(
            resources=[leases_api.Resource(id=r.id, type=r.type) for r in found]
        )
