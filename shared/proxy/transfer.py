"""The client side of Transfer: a pull with progress and registry credentials on side streams.

Used by berth's client library and CLI (and tests). The side channels are
``Streaming.Stream`` calls: the client opens one per purpose, names it in
the Transfer request, and serves it from a thread while the transfer runs.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message

from shared import typeurl
from shared.api.containerd.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from shared.api.containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from shared.api.containerd.types import platform_pb2
from shared.api.containerd.types.transfer import imagestore_pb2, progress_pb2, registry_pb2
from shared.oci import Platform
from shared.rpc.status import to_native


@dataclass(frozen=True)
class TransferProgress:
    event: str
    name: str
    progress: int
    total: int


ProgressFn = Callable[[TransferProgress], None]
# host -> (username, secret) or None for "no credentials"
CredentialsFn = Callable[[str], tuple[str, str] | None]


class _SideStream:
    """One client-opened Streaming.Stream, served by a thread."""

    def __init__(
        self,
        stub: streaming_pb2_grpc.StreamingStub,
        handle: Callable[[message.Message], message.Message | None],
    ) -> None:
        self.name = f"berth-{secrets.token_hex(8)}"
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(typeurl.pack(streaming_pb2.StreamInit(id=self.name)))
        self._responses: Any = stub.Stream(self._outgoing())
        try:
            next(iter(self._responses))  # the server's ack: registered
        except grpc.RpcError as e:
            self._requests.put(None)
            raise to_native(e) from e
        self._handle = handle
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    def _outgoing(self) -> Iterator[Any]:
        while (item := self._requests.get()) is not None:
            yield item

    def _serve(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for item in self._responses:
                reply = self._handle(typeurl.unpack(item))
                if reply is not None:
                    self._requests.put(typeurl.pack(reply))

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(10)


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
        try:
            options = transfer_pb2.TransferOptions()
            if progress is not None:
                streams.append(_SideStream(self._streaming, _progress_handler(progress)))
                options.progress_stream = streams[-1].name
            resolver = registry_pb2.RegistryResolver()
            if credentials is not None:
                streams.append(_SideStream(self._streaming, _auth_handler(credentials)))
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
        finally:
            for stream in streams:
                stream.close()

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
        try:
            options = transfer_pb2.TransferOptions()
            if progress is not None:
                streams.append(_SideStream(self._streaming, _progress_handler(progress)))
                options.progress_stream = streams[-1].name
            resolver = registry_pb2.RegistryResolver()
            if credentials is not None:
                streams.append(_SideStream(self._streaming, _auth_handler(credentials)))
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
        finally:
            for stream in streams:
                stream.close()


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
