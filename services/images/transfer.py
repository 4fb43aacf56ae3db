"""``containerd.services.transfer.v1.Transfer``: pull, push, import and export, server side.

The request's source and destination (``Any``) say what to do:

==========================  =========================  ========
source                      destination                does
==========================  =========================  ========
OCIRegistry                 ImageStore                 pull
ImageStore                  OCIRegistry                push
ImageImportStream           ImageStore                 import
ImageStore                  ImageExportStream          export
==========================  =========================  ========

Progress goes out as ``containerd.types.transfer.Progress`` on the stream the
request names; registry credentials are asked of the client on the auth
stream (``AuthRequest`` -> ``AuthResponse``) when the registry wants them.
The work itself runs in a thread; its callbacks hop back to the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2

from services.images.archive_export import ArchiveExporter, ExportOptions
from services.images.archive_import import ArchiveImporter, ImageReference, ImportOptions, Unpack
from services.images.pull import Progress, Puller, PullOptions
from services.images.push import Pusher
from services.images.stream_io import RemoteReader, remote_writer
from services.images.streams import Stream, StreamManager
from shared import oci, typeurl
from shared.api.containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from shared.api.containerd.types.transfer import (
    imagestore_pb2,
    importexport_pb2,
    progress_pb2,
    registry_pb2,
)
from shared.errors import InvalidArgument, Unimplemented
from shared.registry import Credentials

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

OCI_REGISTRY = "containerd.types.transfer.OCIRegistry"
IMAGE_STORE = "containerd.types.transfer.ImageStore"
IMPORT_STREAM = "containerd.types.transfer.ImageImportStream"
EXPORT_STREAM = "containerd.types.transfer.ImageExportStream"
AUTH_TIMEOUT = 60.0
DEFAULT_SNAPSHOTTER = "overlayfs"


def _platforms(msgs: Any) -> list[oci.Platform] | None:
    found = [oci.Platform(p.os, p.architecture, p.variant) for p in msgs]
    return found or None


def _import_options(
    source: importexport_pb2.ImageImportStream, destination: imagestore_pb2.ImageStore
) -> ImportOptions:
    references = [
        ImageReference(r.name, r.is_prefix, r.allow_overwrite, r.add_digest, r.skip_named_digest)
        for r in destination.extra_references
    ]
    unpacks = [
        Unpack(
            oci.Platform(u.platform.os, u.platform.architecture, u.platform.variant)
            if u.platform.os
            else oci.host_platform(),
            u.snapshotter or DEFAULT_SNAPSHOTTER,
        )
        for u in destination.unpacks
    ]
    return ImportOptions(
        name=destination.name,
        labels=dict(destination.labels),
        platforms=_platforms(destination.platforms),
        all_metadata=destination.all_metadata,
        manifest_limit=destination.manifest_limit,
        references=references,
        unpacks=unpacks,
        force_compress=source.force_compress,
    )


class TransferServicer(transfer_pb2_grpc.TransferServicer):
    def __init__(
        self,
        puller: Puller,
        pusher: Pusher,
        streams: StreamManager,
        importer: ArchiveImporter,
        exporter: ArchiveExporter,
    ) -> None:
        self._puller = puller
        self._pusher = pusher
        self._streams = streams
        self._importer = importer
        self._exporter = exporter

    async def Transfer(
        self, request: transfer_pb2.TransferRequest, context: Context
    ) -> empty_pb2.Empty:
        source = typeurl.message_name(request.source.type_url)
        destination = typeurl.message_name(request.destination.type_url)
        progress_stream = (
            await self._streams.get(request.options.progress_stream)
            if request.options.progress_stream
            else None
        )
        try:
            if (source, destination) == (OCI_REGISTRY, IMAGE_STORE):
                await self._pull(
                    typeurl.unpack_as(request.source, registry_pb2.OCIRegistry),
                    typeurl.unpack_as(request.destination, imagestore_pb2.ImageStore),
                    progress_stream,
                )
            elif (source, destination) == (IMAGE_STORE, OCI_REGISTRY):
                await self._push(
                    typeurl.unpack_as(request.source, imagestore_pb2.ImageStore),
                    typeurl.unpack_as(request.destination, registry_pb2.OCIRegistry),
                    progress_stream,
                )
            elif (source, destination) == (IMPORT_STREAM, IMAGE_STORE):
                await self._import(
                    typeurl.unpack_as(request.source, importexport_pb2.ImageImportStream),
                    typeurl.unpack_as(request.destination, imagestore_pb2.ImageStore),
                    progress_stream,
                )
            elif (source, destination) == (IMAGE_STORE, EXPORT_STREAM):
                await self._export(
                    typeurl.unpack_as(request.source, imagestore_pb2.ImageStore),
                    typeurl.unpack_as(request.destination, importexport_pb2.ImageExportStream),
                    progress_stream,
                )
            else:
                raise Unimplemented(
                    f"transfer from {source or 'nothing'} to {destination or 'nothing'}"
                )
        finally:
            if progress_stream is not None:
                progress_stream.close()
        return empty_pb2.Empty()

    async def _pull(
        self,
        source: registry_pb2.OCIRegistry,
        destination: imagestore_pb2.ImageStore,
        progress_stream: Stream | None,
    ) -> None:
        if not source.reference:
            raise InvalidArgument("OCIRegistry needs a reference")
        loop = asyncio.get_running_loop()
        unpacks = list(destination.unpacks)
        platforms = _platforms(destination.platforms) or (
            [
                oci.Platform(u.platform.os, u.platform.architecture, u.platform.variant)
                for u in unpacks
                if u.platform.os
            ]
            or [oci.host_platform()]
        )
        options = PullOptions(
            platforms=platforms,
            unpack=bool(unpacks),
            snapshotter=next((u.snapshotter for u in unpacks if u.snapshotter), "overlayfs"),
            labels=dict(destination.labels),
        )
        report = self._reporter(loop, progress_stream)
        auth = (
            await self._streams.get(source.resolver.auth_stream)
            if source.resolver.auth_stream
            else None
        )
        credentials = self._credentials(loop, auth, source.reference) if auth else None
        name = destination.name or source.reference

        def work() -> None:
            image = self._puller.pull(source.reference, options, report, credentials)
            if image.name != name:
                log.debug("pulled %s as %s", source.reference, image.name)

        await asyncio.to_thread(contextvars.copy_context().run, work)

    async def _push(
        self,
        source: imagestore_pb2.ImageStore,
        destination: registry_pb2.OCIRegistry,
        progress_stream: Stream | None,
    ) -> None:
        if not source.name or not destination.reference:
            raise InvalidArgument("push needs an image name and a target reference")
        loop = asyncio.get_running_loop()
        report = self._reporter(loop, progress_stream)
        auth = (
            await self._streams.get(destination.resolver.auth_stream)
            if destination.resolver.auth_stream
            else None
        )
        credentials = self._credentials(loop, auth, destination.reference) if auth else None
        platforms = _platforms(source.platforms)

        def work() -> None:
            self._pusher.push(source.name, destination.reference, platforms, report, credentials)

        await asyncio.to_thread(contextvars.copy_context().run, work)

    async def _import(
        self,
        source: importexport_pb2.ImageImportStream,
        destination: imagestore_pb2.ImageStore,
        progress_stream: Stream | None,
    ) -> None:
        if not source.stream:
            raise InvalidArgument("ImageImportStream needs a stream")
        stream = await self._streams.get(source.stream)
        loop = asyncio.get_running_loop()
        options = _import_options(source, destination)
        reader = RemoteReader(stream, loop)
        report = self._reporter(loop, progress_stream)
        try:
            await asyncio.to_thread(
                contextvars.copy_context().run,
                self._importer.import_archive,
                reader,
                options,
                report,
            )
        finally:
            stream.close()

    async def _export(
        self,
        source: imagestore_pb2.ImageStore,
        destination: importexport_pb2.ImageExportStream,
        progress_stream: Stream | None,
    ) -> None:
        if not destination.stream:
            raise InvalidArgument("ImageExportStream needs a stream")
        names = [source.name] if source.name else []
        for ref in source.extra_references:
            if ref.is_prefix:
                raise Unimplemented(f"export of every image under the prefix {ref.name!r}")
            names.append(ref.name)
        if not names:
            raise InvalidArgument("export needs an image name")
        stream = await self._streams.get(destination.stream)
        options = ExportOptions(
            platforms=_platforms(destination.platforms) or _platforms(source.platforms),
            all_platforms=destination.all_platforms,
            skip_compatibility_manifest=destination.skip_compatibility_manifest,
            skip_non_distributable=destination.skip_non_distributable,
        )
        report = self._reporter(asyncio.get_running_loop(), progress_stream)
        try:
            async with remote_writer(stream) as writer:
                await asyncio.to_thread(
                    contextvars.copy_context().run,
                    self._exporter.export,
                    writer,
                    names,
                    options,
                    report,
                )
        finally:
            stream.close()

    @staticmethod
    def _reporter(
        loop: asyncio.AbstractEventLoop, stream: Stream | None
    ) -> Callable[[Progress], None]:
        def report(p: Progress) -> None:
            if stream is None:
                return
            msg = progress_pb2.Progress(
                event=p.event, name=p.name, progress=p.progress, total=p.total
            )
            asyncio.run_coroutine_threadsafe(stream.send(msg), loop)

        return report

    @staticmethod
    def _credentials(
        loop: asyncio.AbstractEventLoop, stream: Stream, reference: str
    ) -> Callable[[str], Credentials | None]:
        """Ask the client for credentials over its auth stream (from a worker thread)."""

        async def ask(host: str) -> Credentials | None:
            await stream.send(registry_pb2.AuthRequest(host=host, reference=reference))
            reply = await stream.recv()
            if not isinstance(reply, registry_pb2.AuthResponse):
                return None
            if reply.authType == registry_pb2.CREDENTIALS:
                return Credentials(username=reply.username, password=reply.secret)
            if reply.authType == registry_pb2.REFRESH:
                return Credentials(identity_token=reply.secret)
            return None

        def credentials(host: str) -> Credentials | None:
            return asyncio.run_coroutine_threadsafe(ask(host), loop).result(AUTH_TIMEOUT)

        return credentials
