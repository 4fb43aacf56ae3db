"""The client: one connection to a berth suite's socket, in one namespace.

::

    with berth.Client() as client:                 # $BERTH_ADDRESS or /run/berth/berth.sock
        image = client.pull("docker.io/library/busybox:latest")
        ...

A client does not connect until its first call; a suite that does not answer
makes that call raise :class:`berth.Unavailable` saying where it looked. Every
call carries the client's namespace (``containerd-namespace``), or the one of
an enclosing :func:`berth.namespace` block, and the lease of an enclosing
:meth:`Client.lease` block (``containerd-lease``). Failures raise the
:mod:`berth.errors` classes (``NotFound``, ``AlreadyExists``, ...).

A client is safe to share between threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

import grpc
from google.protobuf import empty_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from berth import _rpc, distribution
from berth.image import Image
from berth.services import Services
from shared import identifiers
from shared import oci as formats
from shared.api.containerd.services.images.v1 import images_pb2
from shared.api.containerd.services.introspection.v1 import introspection_pb2
from shared.api.containerd.services.namespaces.v1 import namespace_pb2
from shared.containers import DEFAULT_RUNTIME
from shared.diff import Descriptor
from shared.errors import BerthError
from shared.images import LABEL_DEFAULT_RUNTIME, LABEL_DEFAULT_SNAPSHOTTER
from shared.proxy.content import ContentProxy
from shared.proxy.diff import DiffProxy, descriptor_from_proto, descriptor_to_proto
from shared.proxy.snapshots import SnapshotterProxy
from shared.proxy.transfer import CredentialsFn, ProgressFn
from shared.rpc import sync_client

if TYPE_CHECKING:
    from berth.container import Container, ContainerOpt
    from berth.events import Subscription
    from berth.leases import Lease
    from berth.task import TaskInfo

DEFAULT_ADDRESS = "/run/berth/berth.sock"
DEFAULT_NAMESPACE = "default"
DEFAULT_SNAPSHOTTER = "overlayfs"
ADDRESS_ENV = "BERTH_ADDRESS"


def to_datetime(ts: timestamp_pb2.Timestamp) -> datetime | None:
    """A protobuf timestamp as an aware datetime; None when unset."""
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC)


class Client:
    """A connection to berth's socket (containerd's ``containerd.New``).

    ``address`` defaults to ``$BERTH_ADDRESS``, else ``/run/berth/berth.sock``; it may
    be a socket path, ``unix://`` URL or ``host:port``. ``platform`` (``"linux/arm64"``)
    is what images are resolved for; the host's by default.
    """

    def __init__(
        self,
        address: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        platform: str | formats.Platform | None = None,
    ) -> None:
        self.address = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
        identifiers.validate(namespace, what="namespace")
        if isinstance(platform, str):
            platform = formats.parse_platform(platform)
        self.platform = platform or formats.host_platform()
        self._base = sync_client.channel(self.address)
        self._owner = True
        self._bind(namespace)

    def _bind(self, namespace: str) -> None:
        self._namespace = namespace
        # Sets the namespace and lease for the shared interceptor under it; proxies from
        # shared (content, snapshots, diff, transfer) use this one and translate errors
        # themselves.
        self._channel = grpc.intercept_channel(self._base, _rpc.RequestContext(namespace))
        self.api = Services(grpc.intercept_channel(self._channel, _rpc.Errors(self.address)))

    # -- connection and namespaces ---------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace calls go to now: an enclosing :func:`berth.namespace` block's,
        else the client's."""
        return _rpc.current_namespace(self._namespace)

    def with_namespace(self, namespace: str) -> Client:
        """A client for ``namespace`` sharing this one's connection (closing it is a no-op)."""
        identifiers.validate(namespace, what="namespace")
        view = object.__new__(Client)
        view.address, view.platform = self.address, self.platform
        view._base, view._owner = self._base, False
        view._bind(namespace)
        return view

    def close(self) -> None:
        if self._owner:
            self._base.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """For calls through shared proxies: unreachable suites get the same clear message."""
        try:
            yield
        except BerthError as e:
            hinted = _rpc.hint_unavailable(e, self.address)
            if hinted is e:
                raise
            raise hinted from e.__cause__

    def version(self) -> tuple[str, str]:
        """The suite's ``(version, revision)``."""
        reply = self.api.version.Version(empty_pb2.Empty())
        return reply.version, reply.revision

    def server(self) -> introspection_pb2.ServerResponse:
        """The suite's UUID and process facts (``Introspection.Server``)."""
        return self.api.introspection.Server(empty_pb2.Empty())

    def plugins(self, *filters: str) -> list[introspection_pb2.Plugin]:
        """Plugins of the suite (``ctr plugins ls``); filters such as
        ``"type==io.containerd.snapshotter.v1"``."""
        reply = self.api.introspection.Plugins(introspection_pb2.PluginsRequest(filters=filters))
        return list(reply.plugins)

    def namespaces(self) -> list[str]:
        reply = self.api.namespaces.List(namespace_pb2.ListNamespacesRequest())
        return [n.name for n in reply.namespaces]

    def namespace_labels(self, name: str | None = None) -> dict[str, str]:
        """Labels of a namespace (this client's by default); none for one that never was."""
        reply = self.api.namespaces.Get(
            namespace_pb2.GetNamespaceRequest(name=name or self.namespace)
        )
        return dict(reply.namespace.labels)

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.api.namespaces.Create(
            namespace_pb2.CreateNamespaceRequest(
                namespace=namespace_pb2.Namespace(name=name, labels=dict(labels or {}))
            )
        )

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> dict[str, str]:
        """Set (or, with an empty value, remove) labels of a namespace; returns all its
        labels after. ``containerd.io/defaults/snapshotter`` and ``.../runtime`` are the
        namespace's defaults."""
        msg = namespace_pb2.Namespace(name=name, labels={k: v for k, v in labels.items() if v})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        reply = self.api.namespaces.Update(
            namespace_pb2.UpdateNamespaceRequest(namespace=msg, update_mask=mask)
        )
        return dict(reply.namespace.labels)

    def delete_namespace(self, name: str) -> None:
        """Remove an empty namespace (FailedPrecondition while it holds anything)."""
        self.api.namespaces.Delete(namespace_pb2.DeleteNamespaceRequest(name=name))

    def default_snapshotter(self) -> str:
        """The namespace's ``containerd.io/defaults/snapshotter`` label, else overlayfs."""
        return self.namespace_labels().get(LABEL_DEFAULT_SNAPSHOTTER) or DEFAULT_SNAPSHOTTER

    def default_runtime(self) -> str:
        """The namespace's ``containerd.io/defaults/runtime`` label, else runc v2."""
        return self.namespace_labels().get(LABEL_DEFAULT_RUNTIME) or DEFAULT_RUNTIME

    # -- stores ------------------------------------------------------------------

    def content_store(self) -> ContentProxy:
        """The content store (blobs by digest), as ``shared.content.Store``."""
        return ContentProxy(self._channel)

    def snapshot_service(self, snapshotter: str | None = None) -> SnapshotterProxy:
        """One snapshotter (default: the namespace's), as ``shared.snapshots.Snapshotter``."""
        return SnapshotterProxy(self._channel, snapshotter or self.default_snapshotter())

    def diff_service(self) -> DiffProxy:
        """Applies layers onto mounts and computes diffs between mounts."""
        return DiffProxy(self._channel)

    def _read_blob(self, digest: str) -> bytes:
        with self._errors():
            return b"".join(self.content_store().read(digest))

    # -- images ------------------------------------------------------------------

    def _image(self, msg: images_pb2.Image) -> Image:
        return Image(
            self,
            msg.name,
            descriptor_from_proto(msg.target),
            dict(msg.labels),
            to_datetime(msg.created_at),
            to_datetime(msg.updated_at),
            self.platform,
        )

    def get_image(self, name: str) -> Image:
        """The image called ``name`` (NotFound if there is none)."""
        return self._image(self.api.images.Get(images_pb2.GetImageRequest(name=name)).image)

    def list_images(self, *filters: str) -> list[Image]:
        """Images of the namespace; filters as containerd's (``name~=busybox``,
        ``labels."x"==y``; several filters match any)."""
        reply = self.api.images.List(images_pb2.ListImagesRequest(filters=filters))
        return [self._image(i) for i in reply.images]

    def create_image(
        self, name: str, target: Descriptor, labels: Mapping[str, str] | None = None
    ) -> Image:
        """Record an image (AlreadyExists if the name is taken); e.g. to tag one."""
        msg = images_pb2.Image(
            name=name, target=descriptor_to_proto(target), labels=dict(labels or {})
        )
        return self._image(self.api.images.Create(images_pb2.CreateImageRequest(image=msg)).image)

    def _update_image_labels(self, name: str, labels: Mapping[str, str]) -> Image:
        msg = images_pb2.Image(name=name, labels={k: v for k, v in labels.items() if v})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        reply = self.api.images.Update(images_pb2.UpdateImageRequest(image=msg, update_mask=mask))
        return self._image(reply.image)

    def delete_image(self, name: str, *, sync: bool = False) -> None:
        """Remove the image record; its content goes with the next garbage collection
        (at once with ``sync``)."""
        self.api.images.Delete(images_pb2.DeleteImageRequest(name=name, sync=sync))

    def pull(
        self,
        ref: str,
        *,
        unpack: bool = True,
        platform: str | formats.Platform | None = None,
        snapshotter: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: ProgressFn | None = None,
        credentials: CredentialsFn | None = None,
    ) -> Image:
        """Pull ``ref`` (``host/repo:tag`` or ``@digest``) into the namespace, server side.

        ``progress`` is called with :class:`berth.Progress` as blobs download and layers
        unpack. ``credentials(host)`` answers registry logins with ``(user, secret)``
        or None. Registry hosts (mirrors, TLS, plain HTTP) are the suite's
        ``certs.d`` configuration; a registry on a loopback address with a port is
        tried over plain HTTP when it does not speak TLS.
        """
        with self._errors():
            return distribution.pull(
                self,
                ref,
                unpack=unpack,
                platform=platform,
                snapshotter=snapshotter,
                labels=labels,
                progress=progress,
                credentials=credentials,
            )

    def push(
        self,
        ref: str,
        image: Image | str | None = None,
        *,
        platform: str | formats.Platform | None = None,
        progress: ProgressFn | None = None,
        credentials: CredentialsFn | None = None,
    ) -> None:
        """Push ``image`` (default: the image named ``ref``) to the registry as ``ref``."""
        with self._errors():
            distribution.push(
                self, ref, image, platform=platform, progress=progress, credentials=credentials
            )

    def import_(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        base_name: str = "",
        platform: str | formats.Platform | None = None,
        all_platforms: bool = False,
        unpack: bool = True,
        snapshotter: str | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Image]:
        """Import an OCI layout or ``docker save`` tar (a path or a binary stream); returns
        the images it named. ``base_name`` is ctr's ``--base-name``."""
        with self._errors():
            return distribution.import_(
                self,
                source,
                base_name=base_name,
                platform=platform,
                all_platforms=all_platforms,
                unpack=unpack,
                snapshotter=snapshotter,
                progress=progress,
            )

    def export(
        self,
        destination: str | os.PathLike[str] | BinaryIO,
        refs: str | Sequence[str],
        *,
        platform: str | formats.Platform | None = None,
        all_platforms: bool = False,
    ) -> None:
        """Write the images ``refs`` as an OCI layout tar to a path or binary stream."""
        with self._errors():
            distribution.export(
                self, destination, refs, platform=platform, all_platforms=all_platforms
            )

    # -- containers ----------------------------------------------------------------

    def new_container(
        self,
        container_id: str,
        *opts: ContainerOpt,
        image: Image | str | None = None,
        snapshot: ContainerOpt | None = None,
        spec: ContainerOpt | dict[str, Any] | None = None,
        runtime: str | None = None,
        runtime_options: Any = None,
        snapshotter: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Container:
        """Create a container record; see :func:`berth.container.new_container`."""
        from berth.container import new_container

        with self._errors():
            return new_container(
                self,
                container_id,
                *opts,
                image=image,
                snapshot=snapshot,
                spec=spec,
                runtime=runtime,
                runtime_options=runtime_options,
                snapshotter=snapshotter,
                labels=labels,
            )

    def load_container(self, container_id: str) -> Container:
        """The container ``container_id`` (NotFound if there is none)."""
        from berth.container import Container

        container = Container(self, container_id)
        container.info()
        return container

    def containers(self, *filters: str) -> list[Container]:
        """Containers of the namespace (filters on ``id``, ``image``, ``runtime.name``,
        ``labels``)."""
        from berth.container import list_containers

        return list_containers(self, filters)

    def tasks(self) -> list[TaskInfo]:
        """Tasks of the namespace, with their pid and status (``ctr tasks ls``)."""
        from berth.task import list_tasks

        return list_tasks(self)

    def restore(self, container_id: str, checkpoint: Image, *, rw: bool = False) -> Container:
        """A new container from a checkpoint image: its image, snapshot, spec and runtime,
        plus its file changes with ``rw`` (``ctr containers restore``). Start the task
        with ``container.new_task(..., checkpoint=checkpoint)`` to restore the process."""
        from berth import checkpoint as cp

        opts = [
            cp.with_restore_image(checkpoint),
            cp.with_restore_spec(checkpoint),
            cp.with_restore_runtime(checkpoint),
        ]
        if rw:
            opts.append(cp.with_restore_rw(checkpoint))
        return self.new_container(container_id, *opts)

    # -- leases and events -------------------------------------------------------------

    def lease(
        self,
        lease_id: str | None = None,
        *,
        expire: timedelta | None = timedelta(hours=24),
        labels: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractContextManager[Lease]:
        """A lease for the ``with`` block: what calls in it create (content, snapshots)
        is kept from garbage collection until it ends, when the lease is deleted."""
        from berth.leases import lease_block

        return lease_block(self, lease_id, expire=expire, labels=labels)

    def create_lease(
        self,
        lease_id: str | None = None,
        *,
        expire: timedelta | None = timedelta(hours=24),
        labels: Mapping[str, str] | None = None,
    ) -> Lease:
        from berth.leases import create

        return create(self, lease_id, expire=expire, labels=labels)

    def leases(self, *filters: str) -> list[Lease]:
        from berth.leases import list_leases

        return list_leases(self, filters)

    @contextlib.contextmanager
    def _temporary_lease(self) -> Iterator[None]:
        """The enclosing lease, or one of our own for the block (containerd's WithLease)."""
        if _rpc.current_lease():
            yield
            return
        with self.lease(expire=timedelta(hours=24)):
            yield

    def publish(self, topic: str, event: Message) -> None:
        """Publish ``event`` (a protobuf message) on ``topic`` in the client's namespace."""
        from berth.events import publish

        publish(self, topic, event)

    def subscribe(self, *filters: str) -> Subscription:
        """Events as they happen, in every namespace unless filtered
        (``namespace==default``, ``topic~="/tasks/"``); iterate, then ``close()``."""
        from berth.events import Subscription

        return Subscription(self, filters)
