"""Containers: metadata records (spec, runtime, root filesystem) that tasks run from.

A container is made from options, containerd style::

    container = client.new_container(
        "redis",
        image=image,
        snapshot=berth.with_new_snapshot("redis-rootfs", image),
        spec=berth.with_new_spec(oci.with_image_config(image)),
    )

Records are the ones ``ctr`` makes: the spec as JSON in an ``Any`` of type
``types.containerd.io/opencontainers/runtime-spec/1/Spec``, runtime
``io.containerd.runc.v2`` with ``containerd.runc.v1.Options``, the snapshotter and
snapshot key of the root filesystem, the image name. ``ctr`` lists, runs and
deletes them, and this client does the same with ``ctr``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, field_mask_pb2, message

from berth import oci
from berth.cio import Creator, IOConfig, null_io
from berth.task import Task
from shared import typeurl
from shared.api.containerd.runc.options import oci_pb2 as runc_options_pb2
from shared.api.containerd.services.containers.v1 import containers_pb2 as api
from shared.api.containerd.services.tasks.v1 import tasks_pb2
from shared.errors import FailedPrecondition, NotFound, Unimplemented
from shared.proxy.diff import descriptor_to_proto
from shared.proxy.snapshots import mount_to_proto

if TYPE_CHECKING:
    from berth.client import Client
    from berth.image import Image

LABEL_STOP_SIGNAL = "io.containerd.image.config.stop-signal"


@dataclass
class ContainerRecord:
    """A container as stored (and, while options run, as it is being made)."""

    id: str
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = ""
    runtime_options: any_pb2.Any | None = None
    spec: any_pb2.Any | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    extensions: dict[str, any_pb2.Any] = field(default_factory=dict)
    sandbox: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_proto(self) -> api.Container:
        msg = api.Container(
            id=self.id,
            image=self.image,
            labels=self.labels,
            runtime=api.Container.Runtime(name=self.runtime),
            snapshotter=self.snapshotter,
            snapshot_key=self.snapshot_key,
            extensions=self.extensions,
            sandbox=self.sandbox,
        )
        if self.runtime_options is not None:
            msg.runtime.options.CopyFrom(self.runtime_options)
        if self.spec is not None:
            msg.spec.CopyFrom(self.spec)
        return msg

    @classmethod
    def from_proto(cls, msg: api.Container) -> ContainerRecord:
        from berth.client import to_datetime

        return cls(
            id=msg.id,
            image=msg.image,
            labels=dict(msg.labels),
            runtime=msg.runtime.name,
            runtime_options=msg.runtime.options if msg.runtime.HasField("options") else None,
            spec=msg.spec if msg.HasField("spec") else None,
            snapshotter=msg.snapshotter,
            snapshot_key=msg.snapshot_key,
            extensions=dict(msg.extensions),
            sandbox=msg.sandbox,
            created_at=to_datetime(msg.created_at),
            updated_at=to_datetime(msg.updated_at),
        )

    def spec_dict(self) -> dict[str, Any]:
        if self.spec is None:
            return {}
        value = typeurl.unpack_json(self.spec, typeurl.OCI_SPEC)
        return value if isinstance(value, dict) else {}


ContainerOpt = Callable[["Client", ContainerRecord], None]


# -- options ----------------------------------------------------------------------


def with_image(image: Image | str) -> ContainerOpt:
    """Record the image the container comes from."""

    def opt(client: Client, record: ContainerRecord) -> None:
        record.image = image if isinstance(image, str) else image.name

    return opt


def with_snapshotter(name: str) -> ContainerOpt:
    def opt(client: Client, record: ContainerRecord) -> None:
        record.snapshotter = name

    return opt


def _snapshot(
    key: str, image: Image, view: bool, labels: Mapping[str, str] | None, snapshotter: str | None
) -> ContainerOpt:
    def opt(client: Client, record: ContainerRecord) -> None:
        name = snapshotter or record.snapshotter or client.default_snapshotter()
        # Unlike containerd, an image that is not unpacked yet is unpacked first.
        if not image.is_unpacked(name):
            image.unpack(name)
        service = client.snapshot_service(name)
        (service.view if view else service.prepare)(key, image.chain_id(), labels)
        record.snapshotter, record.snapshot_key = name, key

    return opt


def with_new_snapshot(
    key: str,
    image: Image,
    *,
    labels: Mapping[str, str] | None = None,
    snapshotter: str | None = None,
) -> ContainerOpt:
    """A new writable snapshot ``key`` on top of the image's root filesystem."""
    return _snapshot(key, image, False, labels, snapshotter)


def with_new_snapshot_view(
    key: str,
    image: Image,
    *,
    labels: Mapping[str, str] | None = None,
    snapshotter: str | None = None,
) -> ContainerOpt:
    """A new read-only view ``key`` of the image's root filesystem (many containers may
    each have one)."""
    return _snapshot(key, image, True, labels, snapshotter)


def with_snapshot(key: str) -> ContainerOpt:
    """An existing snapshot as the root filesystem (NotFound if it does not exist)."""

    def opt(client: Client, record: ContainerRecord) -> None:
        name = record.snapshotter or client.default_snapshotter()
        client.snapshot_service(name).stat(key)
        record.snapshotter, record.snapshot_key = name, key

    return opt


def with_new_spec(*opts: oci.SpecOpt) -> ContainerOpt:
    """containerd's default spec for the container, shaped by ``opts`` (:mod:`berth.oci`)."""

    def opt(client: Client, record: ContainerRecord) -> None:
        context = oci.SpecContext(
            record.id, client.namespace, client, record.snapshotter, record.snapshot_key
        )
        record.spec = typeurl.pack_json(typeurl.OCI_SPEC, oci.generate_spec(context, *opts))

    return opt


def with_spec(spec: Mapping[str, Any], *opts: oci.SpecOpt) -> ContainerOpt:
    """A given spec, shaped by ``opts``."""

    def opt(client: Client, record: ContainerRecord) -> None:
        context = oci.SpecContext(
            record.id, client.namespace, client, record.snapshotter, record.snapshot_key
        )
        shaped = oci.apply(context, dict(spec), *opts)
        record.spec = typeurl.pack_json(typeurl.OCI_SPEC, shaped)

    return opt


def with_runtime(name: str, options: message.Message | any_pb2.Any | None = None) -> ContainerOpt:
    """The runtime (``io.containerd.runc.v2``) and its options (``containerd.runc.v1.Options``
    for runc, e.g. ``Options(binary_name="crun")``)."""

    def opt(client: Client, record: ContainerRecord) -> None:
        record.runtime = name
        if isinstance(options, any_pb2.Any):
            record.runtime_options = options
        elif options is not None:
            record.runtime_options = typeurl.pack(options)
        elif name.endswith(".runc.v2"):
            record.runtime_options = typeurl.pack(runc_options_pb2.Options())  # as ctr sends
        else:
            record.runtime_options = None

    return opt


def runc_options(
    *, binary_name: str = "", root: str = "", systemd_cgroup: bool = False
) -> message.Message:
    """Options of the runc runtime (``containerd.runc.v1.Options``) for :func:`with_runtime`:
    another runc-compatible binary (``"crun"``), its state root, the systemd cgroup driver
    (``ctr run --runc-binary``, ``--runc-root``, ``--runc-systemd-cgroup``)."""
    return runc_options_pb2.Options(
        binary_name=binary_name, root=root, systemd_cgroup=systemd_cgroup
    )


def with_container_labels(labels: Mapping[str, str]) -> ContainerOpt:
    def opt(client: Client, record: ContainerRecord) -> None:
        record.labels.update(labels)

    return opt


def with_image_config_labels(image: Image) -> ContainerOpt:
    """The labels of the image's config, as ``ctr run`` adds them."""

    def opt(client: Client, record: ContainerRecord) -> None:
        record.labels.update((image.config().get("config") or {}).get("Labels") or {})

    return opt


def with_image_stop_signal(image: Image, default: str = "SIGTERM") -> ContainerOpt:
    """Label the container with the image's stop signal (``ctr run`` does)."""

    def opt(client: Client, record: ContainerRecord) -> None:
        signal = (image.config().get("config") or {}).get("StopSignal") or default
        record.labels[LABEL_STOP_SIGNAL] = signal

    return opt


def with_container_extension(name: str, value: message.Message) -> ContainerOpt:
    def opt(client: Client, record: ContainerRecord) -> None:
        record.extensions[name] = typeurl.pack(value)

    return opt


# -- making and finding containers ------------------------------------------------


def new_container(
    client: Client,
    container_id: str,
    *opts: ContainerOpt,
    image: Image | str | None = None,
    snapshot: ContainerOpt | None = None,
    spec: ContainerOpt | Mapping[str, Any] | None = None,
    runtime: str | None = None,
    runtime_options: Any = None,
    snapshotter: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Container:
    """Create the container ``container_id``.

    The record starts with the namespace's default runtime (runc v2, with empty runc
    options as ``ctr`` sends); positional ``opts`` run first, in order, then the keywords:
    ``snapshotter``, ``image``, ``runtime``, ``labels``, ``snapshot``, and ``spec`` last, so
    that spec options can read the snapshot (user names). The snapshot is made under a
    lease, so garbage collection cannot take it before the record refers to it.
    """
    record = ContainerRecord(container_id)
    staged: list[ContainerOpt] = [with_runtime(client.default_runtime()), *opts]
    if snapshotter is not None:
        staged.append(with_snapshotter(snapshotter))
    if image is not None:
        staged.append(with_image(image))
    if runtime is not None or runtime_options is not None:
        staged.append(with_runtime(runtime or client.default_runtime(), runtime_options))
    if labels:
        staged.append(with_container_labels(labels))
    if snapshot is not None:
        staged.append(snapshot)
    if spec is not None:
        staged.append(spec if callable(spec) else with_spec(spec))
    with client._temporary_lease():
        for opt in staged:
            opt(client, record)
        reply = client.api.containers.Create(
            api.CreateContainerRequest(container=record.to_proto())
        )
    return Container(client, container_id, ContainerRecord.from_proto(reply.container))


def list_containers(client: Client, filters: Sequence[str]) -> list[Container]:
    request = api.ListContainersRequest(filters=filters)
    try:
        found = [m.container for m in client.api.containers.ListStream(request)]
    except Unimplemented:  # as containerd's client: the older unary call
        found = list(client.api.containers.List(request).containers)
    return [Container(client, c.id, ContainerRecord.from_proto(c)) for c in found]


class Container:
    """A container of the client's namespace (as it was when the client made or loaded it;
    :meth:`info` reads it again)."""

    def __init__(self, client: Client, container_id: str, record: ContainerRecord | None = None):
        self.client = client
        self.id = container_id
        self._record = record

    def __repr__(self) -> str:
        return f"Container({self.id!r})"

    def info(self, *, refresh: bool = True) -> ContainerRecord:
        if refresh or self._record is None:
            reply = self.client.api.containers.Get(api.GetContainerRequest(id=self.id))
            self._record = ContainerRecord.from_proto(reply.container)
        return self._record

    def spec(self) -> dict[str, Any]:
        """The OCI runtime spec, as a dict."""
        return self.info().spec_dict()

    def image(self) -> Image:
        """The image the container was made from (NotFound if none)."""
        name = self.info().image
        if not name:
            raise NotFound(f"container {self.id} was not created from an image")
        return self.client.get_image(name)

    def labels(self) -> dict[str, str]:
        return self.info().labels

    def set_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Set (or, with an empty value, remove) labels; returns all labels after."""
        msg = api.Container(id=self.id, labels={k: v for k, v in labels.items() if v})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        reply = self.client.api.containers.Update(
            api.UpdateContainerRequest(container=msg, update_mask=mask)
        )
        self._record = ContainerRecord.from_proto(reply.container)
        return self._record.labels

    def new_task(
        self,
        io: Creator | None = None,
        *,
        checkpoint: Image | None = None,
        options: message.Message | None = None,
        runtime_path: str = "",
    ) -> Task:
        """Create the container's task: its init process, created but not started
        (``task.start()``). ``io`` makes its streams (default: none). ``checkpoint``
        restores the process from a checkpoint image instead of starting afresh."""
        from berth.checkpoint import checkpoint_descriptor

        record = self.info()
        process_io = (io or null_io())(self.id)
        try:
            request = tasks_pb2.CreateTaskRequest(
                container_id=self.id,
                stdin=process_io.config.stdin,
                stdout=process_io.config.stdout,
                stderr=process_io.config.stderr,
                terminal=process_io.config.terminal,
                runtime_path=runtime_path,
            )
            if record.snapshot_key:
                if not record.snapshotter:
                    raise FailedPrecondition(f"container {self.id}: snapshot without snapshotter")
                mounts = self.client.snapshot_service(record.snapshotter).mounts(
                    record.snapshot_key
                )
                request.rootfs.extend(mount_to_proto(m) for m in mounts)
            if checkpoint is not None:
                request.checkpoint.CopyFrom(descriptor_to_proto(checkpoint_descriptor(checkpoint)))
            if options is not None:
                request.options.CopyFrom(typeurl.pack(options))
            reply = self.client.api.tasks.Create(request)
        except BaseException:
            process_io.cancel()
            process_io.close()
            raise
        return Task(self.client, self.id, process_io, reply.pid)

    def task(self, attach: Creator | None = None) -> Task:
        """The container's existing task (NotFound if none); ``attach`` copies its streams
        again, through the FIFOs it was created with."""
        reply = self.client.api.tasks.Get(tasks_pb2.GetRequest(container_id=self.id))
        process = reply.process
        process_io = None
        if attach is not None:
            config = IOConfig(process.stdin, process.stdout, process.stderr, process.terminal)
            process_io = attach.attach(config)
        return Task(self.client, self.id, process_io, process.pid)

    def delete(self, *, snapshot_cleanup: bool = True) -> None:
        """Remove the container, and its snapshot unless ``snapshot_cleanup=False``
        (FailedPrecondition while it has a task)."""
        try:
            self.client.api.tasks.Get(tasks_pb2.GetRequest(container_id=self.id))
        except NotFound:
            pass
        else:
            raise FailedPrecondition(f"container {self.id} has a task: delete it first")
        record = self.info()
        if snapshot_cleanup and record.snapshotter and record.snapshot_key:
            with contextlib.suppress(NotFound):
                self.client.snapshot_service(record.snapshotter).remove(record.snapshot_key)
        self.client.api.containers.Delete(api.DeleteContainerRequest(id=self.id))

    def checkpoint(
        self,
        ref: str,
        *,
        task: bool = True,
        image: bool = True,
        rw: bool = True,
        exit: bool = False,
    ) -> Image:
        """Save the container as the checkpoint image ``ref`` (``ctr containers checkpoint``):
        its runtime, and with ``task`` its process (criu), with ``image`` its image,
        with ``rw`` its file changes. The task is paused meanwhile, or ends with ``exit``."""
        from berth.checkpoint import checkpoint_container

        return checkpoint_container(self, ref, task=task, image=image, rw=rw, exit=exit)
