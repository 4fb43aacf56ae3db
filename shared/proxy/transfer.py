"""The client side of Transfer: pull, push, import and export, with side streams.

Used by berth's client library and CLI (and tests). The side channels are
``Streaming.Stream`` calls: the client opens one per purpose (progress,
registry credentials, archive bytes), names it in the Transfer request, and
serves it from a thread while the transfer runs.

Archive bytes flow as containerd's ``pkg/transfer/streaming`` has them: the
receiver grants credit with ``WindowUpdate`` first, the sender sends ``Data``
within it. An import sends (:class:`_ArchiveSender`), an export receives
(:class:`_ArchiveReceiver`); either side may be containerd's Go code.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import message

from shared import typeurl
from shared.api.containerd.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from shared.api.containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from shared.api.containerd.types import platform_pb2
from shared.api.containerd.types.transfer import (
    imagestore_pb2,
    importexport_pb2,
    progress_pb2,
    registry_pb2,
)
from shared.api.containerd.types.transfer import streaming_pb2 as data_pb2
from shared.errors import DeadlineExceeded, InvalidArgument
from shared.oci import Platform, host_platform
from shared.rpc.status import to_native

WINDOW = 4 << 20  # bytes of archive this client lets be in flight to it
MAX_DATA = 1 << 20  # bytes per Data message it sends
EXPORT_DRAIN_TIMEOUT = 300.0  # after the Transfer returned, for the rest of the archive to arrive
DRAIN_TIMEOUT = 10.0  # after the Transfer returned, for the last progress messages


@dataclass(frozen=True)
class TransferProgress:
    event: str
    name: str
    progress: int
    total: int


ProgressFn = Callable[[TransferProgress], None]
# host -> (username, secret) or None for "no credentials"
CredentialsFn = Callable[[str], tuple[str, str] | None]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _SideStream:
    """One client-opened Streaming.Stream: a thread hands the server's messages to ``handle``
    (whose answer, if any, is sent back) and calls ``on_end`` once the server ended it.

    The server ends the progress and archive streams of a transfer when it is done with
    them; an auth stream (``server_ends=False``) is only ever cancelled by the client.
    """

    def __init__(
        self,
        stub: streaming_pb2_grpc.StreamingStub,
        handle: Callable[[message.Message], message.Message | None],
        on_end: Callable[[], None] = lambda: None,
        *,
        server_ends: bool = True,
    ) -> None:
        self.name = f"berth-{secrets.token_hex(8)}"
        self._server_ends = server_ends
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(typeurl.pack(streaming_pb2.StreamInit(id=self.name)))
        self._responses: Any = stub.Stream(self._outgoing())
        try:
            next(iter(self._responses))  # the server's ack: registered
        except grpc.RpcError as e:
            self._requests.put(None)
            raise to_native(e) from e
        self._handle = handle
        self._on_end = on_end
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    def _outgoing(self) -> Iterator[Any]:
        while (item := self._requests.get()) is not None:
            yield item

    def _serve(self) -> None:
        try:
            with contextlib.suppress(grpc.RpcError):
                for item in self._responses:
                    reply = self._handle(typeurl.unpack(item))
                    if reply is not None:
                        self.send(reply)
        finally:
            self._on_end()

    def send(self, msg: message.Message) -> None:
        self._requests.put(typeurl.pack(msg))

    def finish(self) -> None:
        """Send nothing more (the server reads the end of the stream)."""
        self._requests.put(None)

    def cancel(self) -> None:
        self._responses.cancel()

    def wait(self, timeout: float) -> bool:
        """Wait until the server ended the stream; False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, drain: bool = True) -> None:
        """End the stream: after the transfer succeeded (``drain``), the server's last messages
        (progress) are still read; otherwise, or for an auth stream, it is cancelled."""
        self.finish()
        if drain and self._server_ends:
            self._thread.join(DRAIN_TIMEOUT)
        if self._thread.is_alive():
            self.cancel()
            self._thread.join(5)


class _ArchiveSender:
    """Sends a file's bytes as Data on a stream, within the window the server grants
    (containerd's SendStream)."""

    def __init__(self, stub: streaming_pb2_grpc.StreamingStub, source: Readable) -> None:
        self._source = source
        self._credit = 0
        self._stopped = False
        self._changed = threading.Condition()
        self.error: Exception | None = None
        self._side = _SideStream(stub, self._on_message, self._stop)
        self.name = self._side.name
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-send", daemon=True)
        self._thread.start()

    def _on_message(self, msg: message.Message) -> None:
        if isinstance(msg, data_pb2.WindowUpdate) and msg.update > 0:
            with self._changed:
                self._credit += msg.update
                self._changed.notify_all()

    def _stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._credit > 0 or self._stopped)
                    if self._stopped:
                        return
                    wanted = min(self._credit, MAX_DATA)
                data = self._source.read(wanted)
                if not data:
                    return
                with self._changed:
                    self._credit -= len(data)
                self._side.send(data_pb2.Data(data=data))
        except Exception as e:  # reported by the caller, after the Transfer call
            self.error = e
        finally:
            self._side.finish()

    def close(self, drain: bool = True) -> None:
        self._stop()
        self._thread.join(10)
        self._side.close(drain)


class _ArchiveReceiver:
    """Writes the Data of a stream to a file, granting the server a window as it goes
    (containerd's ReceiveStream)."""

    def __init__(
        self, stub: streaming_pb2_grpc.StreamingStub, sink: Writable, window: int = WINDOW
    ) -> None:
        self._sink = sink
        self._window = window
        self._outstanding = 0
        self.error: Exception | None = None
        self._side = _SideStream(stub, self._on_message)
        self.name = self._side.name
        self._grant(window)

    def _grant(self, update: int) -> None:
        self._outstanding += update
        self._side.send(data_pb2.WindowUpdate(update=update))

    def _on_message(self, msg: message.Message) -> None:
        if self.error is not None or not isinstance(msg, data_pb2.Data):
            return
        try:
            self._sink.write(msg.data)
        except Exception as e:  # reported by the caller; the server sees the stream go
            self.error = e
            self._side.cancel()
            return
        self._outstanding -= len(msg.data)
        if self._outstanding <= self._window // 2:
            self._grant(self._window - self._outstanding)

    def wait(self, timeout: float) -> None:
        """Wait for the rest of the archive once the Transfer returned."""
        if not self._side.wait(timeout):
            raise DeadlineExceeded(f"export stream {self.name}: the archive did not end")
        if self.error is not None:
            raise self.error

    def close(self, drain: bool = True) -> None:
        self._side.close(drain)


class TransferClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._transfer = transfer_pb2_grpc.TransferStub(channel)
        self._streaming = streaming_pb2_grpc.StreamingStub(channel)

    def pull(
        self,
        reference: str,
        *,
        name: str = "",
        platforms: Sequence[Platform] = (),
        unpack: bool = True,
        snapshotter: str = "overlayfs",
        labels: dict[str, str] | None = None,
        progress: ProgressFn | None = None,
        credentials: CredentialsFn | None = None,
    ) -> None:
        streams: list[_SideStream] = []
        ok = False
        try:
            options = transfer_pb2.TransferOptions()
            if progress is not None:
                streams.append(_SideStream(self._streaming, _progress_handler(progress)))
                options.progress_stream = streams[-1].name
            resolver = registry_pb2.RegistryResolver()
            if credentials is not None:
                streams.append(
                    _SideStream(self._streaming, _auth_handler(credentials), server_ends=False)
                )
                resolver.auth_stream = streams[-1].name
            plats = [
                platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant)
                for p in platforms
            ]
            store = imagestore_pb2.ImageStore(name=name, labels=labels or {}, platforms=plats)
            if unpack:
                targets = plats or [platform_pb2.Platform()]
                store.unpacks.extend(
                    imagestore_pb2.UnpackConfiguration(platform=p, snapshotter=snapshotter)
                    for p in targets
                )
            request = transfer_pb2.TransferRequest(
                source=typeurl.pack(
                    registry_pb2.OCIRegistry(reference=reference, resolver=resolver)
                ),
                destination=typeurl.pack(store),
                options=options,
            )
            try:
                self._transfer.Transfer(request)
            except grpc.RpcError as e:
                raise to_native(e) from e
            ok = True
        finally:
            for stream in streams:
                stream.close(drain=ok)

    def push(
        self,
        name: str,
        reference: str,
        *,
        platforms: Sequence[Platform] = (),
        progress: ProgressFn | None = None,
        credentials: CredentialsFn | None = None,
    ) -> None:
        """Push the image ``name`` of the namespace to ``reference``."""
        streams: list[_SideStream] = []
        ok = False
        try:
            options = transfer_pb2.TransferOptions()
            if progress is not None:
                streams.append(_SideStream(self._streaming, _progress_handler(progress)))
                options.progress_stream = streams[-1].name
            resolver = registry_pb2.RegistryResolver()
            if credentials is not None:
                streams.append(
                    _SideStream(self._streaming, _auth_handler(credentials), server_ends=False)
                )
                resolver.auth_stream = streams[-1].name
            plats = [
                platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant)
                for p in platforms
            ]
            request = transfer_pb2.TransferRequest(
                source=typeurl.pack(imagestore_pb2.ImageStore(name=name, platforms=plats)),
                destination=typeurl.pack(
                    registry_pb2.OCIRegistry(reference=reference, resolver=resolver)
                ),
                options=options,
            )
            try:
                self._transfer.Transfer(request)
            except grpc.RpcError as e:
                raise to_native(e) from e
            ok = True
        finally:
            for stream in streams:
                stream.close(drain=ok)

    def import_archive(
        self,
        fileobj: Readable,
        *,
        name: str = "",
        platforms: Sequence[Platform] = (),
        unpack: bool = True,
        snapshotter: str = "overlayfs",
        all_platforms: bool = False,
        progress: ProgressFn | None = None,
    ) -> None:
        """Import an OCI layout or ``docker save`` tar read from ``fileobj`` into the namespace,
        as containerd 1.7's ``ctr images import --local=false`` does.

        Images are named by the archive (``io.containerd.image.name``, docker's ``RepoTags``)
        and ``name`` is ctr's ``--base-name``: tag-only names become ``<name>:<tag>`` and
        only full names under ``name`` are kept. Without it, the base name is
        ``import-<date>`` and every full name is kept. Only the host's platform (or
        ``platforms``) is checked and unpacked, unless ``all_platforms``.
        """
        streams: list[_SideStream] = []
        sender: _ArchiveSender | None = None
        ok = False
        try:
            options = transfer_pb2.TransferOptions()
            if progress is not None:
                streams.append(_SideStream(self._streaming, _progress_handler(progress)))
                options.progress_stream = streams[-1].name
            sender = _ArchiveSender(self._streaming, fileobj)
            base = name or f"import-{time.strftime('%Y-%m-%d')}"
            plats = [_platform(p) for p in platforms]
            store = imagestore_pb2.ImageStore(
                platforms=[] if all_platforms else plats or [_platform(host_platform())],
                extra_references=[
                    imagestore_pb2.ImageReference(
                        name=base, is_prefix=True, allow_overwrite=not name
                    )
                ],
            )
            if unpack:
                store.unpacks.extend(
                    imagestore_pb2.UnpackConfiguration(platform=p, snapshotter=snapshotter)
                    for p in plats or [platform_pb2.Platform()]
                )
            request = transfer_pb2.TransferRequest(
                source=typeurl.pack(importexport_pb2.ImageImportStream(stream=sender.name)),
                destination=typeurl.pack(store),
                options=options,
            )
            try:
                self._transfer.Transfer(request)
            except grpc.RpcError as e:
                if sender.error is not None:  # the archive could not be read: that first
                    raise sender.error from to_native(e)
                raise to_native(e) from e
            ok = True
        finally:
            if sender is not None:
                sender.close(drain=ok)
            for stream in streams:
                stream.close(drain=ok)

    def export_archive(
        self,
        fileobj: Writable,
        names: Sequence[str],
        *,
        platforms: Sequence[Platform] = (),
        all_platforms: bool = False,
        skip_compatibility_manifest: bool = False,
    ) -> None:
        """Write the images ``names`` of the namespace to ``fileobj`` as an OCI layout tar
        (with docker's manifest.json unless ``skip_compatibility_manifest``), as
        ``ctr images export --local=false`` does; only the host's platform (or
        ``platforms``) of an index unless ``all_platforms``."""
        if isinstance(names, str):
            names = [names]
        if not names:
            raise InvalidArgument("export needs at least one image name")
        receiver = _ArchiveReceiver(self._streaming, fileobj)
        ok = False
        try:
            source = imagestore_pb2.ImageStore(
                name=names[0],
                extra_references=[imagestore_pb2.ImageReference(name=n) for n in names[1:]],
            )
            destination = importexport_pb2.ImageExportStream(
                stream=receiver.name,
                platforms=[_platform(p) for p in platforms],
                all_platforms=all_platforms,
                skip_compatibility_manifest=skip_compatibility_manifest,
            )
            request = transfer_pb2.TransferRequest(
                source=typeurl.pack(source), destination=typeurl.pack(destination)
            )
            try:
                self._transfer.Transfer(request)
            except grpc.RpcError as e:
                if receiver.error is not None:  # the archive could not be written: that first
                    raise receiver.error from to_native(e)
                raise to_native(e) from e
            receiver.wait(EXPORT_DRAIN_TIMEOUT)
            ok = True
        finally:
            receiver.close(drain=ok)


def _platform(p: Platform) -> platform_pb2.Platform:
    return platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant)


def _progress_handler(progress: ProgressFn) -> Callable[[message.Message], message.Message | None]:
    def handle(msg: message.Message) -> None:
        if isinstance(msg, progress_pb2.Progress):
            progress(TransferProgress(msg.event, msg.name, msg.progress, msg.total))

    return handle


def _auth_handler(
    credentials: CredentialsFn,
) -> Callable[[message.Message], message.Message | None]:
    def handle(msg: message.Message) -> message.Message | None:
        if not isinstance(msg, registry_pb2.AuthRequest):
            return None
        found = credentials(msg.host)
        if found is None:
            return registry_pb2.AuthResponse(authType=registry_pb2.NONE)
        username, secret = found
        return registry_pb2.AuthResponse(
            authType=registry_pb2.CREDENTIALS, username=username, secret=secret
        )

    return handle
