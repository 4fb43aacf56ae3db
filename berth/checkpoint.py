"""Checkpoints as images, built client side as containerd's client builds them.

The suite dumps a task with criu and stores the dump and the container's spec
as blobs (``Tasks.Checkpoint`` returns their descriptors). The client adds
what makes the result restorable elsewhere and records it as an image whose
target is an OCI index:

=========================================================  ===================
``…container.criu.checkpoint.criu.tar``                     the criu dump
``…container.checkpoint.config.v1+proto``                   the spec (an ``Any``)
the container's image target                                its root filesystem
``application/vnd.oci.image.layer.v1.tar+gzip``             its file changes (rw)
``…checkpoint.options.v1+proto``, ``…runtime.options+proto``  container checkpoints
=========================================================  ===================

Annotations name the image (``org.opencontainers.image.ref.name``, or
``image.name`` for a task checkpoint), the runtime and the snapshotter. Such
an image can be pushed, pulled and restored with ``ctr`` as with this client.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2

from berth.container import Container, ContainerOpt, ContainerRecord
from berth.image import write_blob
from berth.task import Status, Task
from shared import oci as formats
from shared import typeurl
from shared.api.containerd.runc.options import oci_pb2 as runc_options
from shared.api.containerd.services.tasks.v1 import tasks_pb2
from shared.diff import Descriptor
from shared.errors import BerthError, InvalidArgument, NotFound
from shared.proxy.diff import descriptor_from_proto
from shared.snapshots import Kind

if TYPE_CHECKING:
    from berth.client import Client
    from berth.image import Image

MEDIA_TYPE_CRIU = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
MEDIA_TYPE_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"
MEDIA_TYPE_OPTIONS = "application/vnd.containerd.container.checkpoint.options.v1+proto"
MEDIA_TYPE_RUNTIME_OPTIONS = "application/vnd.containerd.container.checkpoint.runtime.options+proto"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_IMAGE_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_TASK_IMAGE_NAME = "image.name"
ANNOTATION_RUNTIME = "io.containerd.checkpoint.runtime"
ANNOTATION_SNAPSHOTTER = "io.containerd.checkpoint.snapshotter"
LABEL_CHECKPOINT = "containerd.io/checkpoint"
NAME_FORMAT = "containerd.io/checkpoint/{id}:{date}"
DATE_FORMAT = "%m-%d-%Y-%H:%M:%S"


def _entry(desc: Descriptor, client: Client, *, platform: bool = True) -> dict[str, Any]:
    # containerd marks the blobs it makes with the client's os/arch (no variant).
    plat = formats.Platform(client.platform.os, client.platform.architecture)
    return formats.descriptor_to_json(desc, plat if platform else None)


def _write_index(
    client: Client, manifests: list[dict[str, Any]], annotations: dict[str, str], ref: str
) -> Descriptor:
    index = {"schemaVersion": 2, "manifests": manifests, "annotations": annotations}
    labels = {f"containerd.io/gc.ref.content.{i}": m["digest"] for i, m in enumerate(manifests)}
    data = json.dumps(index, separators=(",", ":")).encode()
    return write_blob(client, data, formats.MT_OCI_INDEX, ref, labels)


def _rw_layer(client: Client, snapshotter: str, key: str) -> Descriptor:
    """The container's file changes as a gzip layer (containerd's ``rootfs.CreateDiff``)."""
    service = client.snapshot_service(snapshotter)
    info = service.stat(key)
    lower_key = f"{info.parent}-parent-view-{secrets.token_hex(6)}"
    lower = service.view(lower_key, info.parent)
    upper_key = ""
    try:
        if info.kind == Kind.ACTIVE:
            upper = service.mounts(key)
        else:
            upper_key = f"{key}-view-{secrets.token_hex(6)}"
            upper = service.view(upper_key, key)
        return client.diff_service().diff(
            lower, upper, media_type=MEDIA_TYPE_LAYER_GZIP, ref=f"checkpoint-rw-{key}"
        )
    finally:
        for removable in (lower_key, upper_key):
            if removable:
                with contextlib.suppress(NotFound):
                    service.remove(removable)


def _dump(
    client: Client, container_id: str, options: runc_options.CheckpointOptions
) -> list[Descriptor]:
    reply = client.api.tasks.Checkpoint(
        tasks_pb2.CheckpointTaskRequest(container_id=container_id, options=typeurl.pack(options))
    )
    return [descriptor_from_proto(d) for d in reply.descriptors]


@contextlib.contextmanager
def _paused(task: Task | None) -> Iterator[None]:
    """The task paused for the block (unless it already was), so files hold still."""
    if task is None or task.status() is Status.PAUSED:
        yield
        return
    task.pause()
    try:
        yield
    finally:
        with contextlib.suppress(BerthError):  # gone after a checkpoint with exit
            task.resume()


def checkpoint_task(task: Task, name: str | None, options: runc_options.CheckpointOptions) -> Image:
    """containerd's ``task.Checkpoint``."""
    client = task.client
    with client._temporary_lease():
        record = Container(client, task.container_id).info()
        name = name or NAME_FORMAT.format(
            id=task.container_id, date=datetime.now().strftime(DATE_FORMAT)
        )
        with _paused(task):
            manifests = [_entry(d, client) for d in _dump(client, task.container_id, options)]
            annotations: dict[str, str] = {}
            if record.image:
                target = client.get_image(record.image).target
                manifests.append(formats.descriptor_to_json(target))
                annotations[ANNOTATION_TASK_IMAGE_NAME] = record.image
            if record.snapshot_key:
                rw = _rw_layer(client, record.snapshotter, record.snapshot_key)
                manifests.append(_entry(rw, client))
            index = _write_index(client, manifests, annotations, task.container_id)
            return client.create_image(name, index, {LABEL_CHECKPOINT: "true"})


def checkpoint_container(
    container: Container, ref: str, *, task: bool, image: bool, rw: bool, exit: bool
) -> Image:
    """containerd's ``container.Checkpoint`` with ctr's options (runtime always, then image,
    rw and task), the task paused meanwhile as ``ctr containers checkpoint`` does."""
    client = container.client
    record = container.info()
    source = container.image()
    try:
        running: Task | None = container.task()
    except NotFound:
        running = None
    with _paused(running), client._temporary_lease():
        annotations = {
            ANNOTATION_IMAGE_NAME: source.name,
            ANNOTATION_RUNTIME: record.runtime,
            ANNOTATION_SNAPSHOTTER: record.snapshotter,
        }
        manifests: list[dict[str, Any]] = []
        if record.runtime_options is not None and record.runtime_options.value:
            data = record.runtime_options.SerializeToString()
            desc = write_blob(
                client, data, MEDIA_TYPE_RUNTIME_OPTIONS, f"{container.id}-runtime-options", {}
            )
            manifests.append(_entry(desc, client))
        if image:
            manifests.append(formats.descriptor_to_json(source.target))
        if rw:
            rw_layer = _rw_layer(client, record.snapshotter, record.snapshot_key)
            manifests.append(_entry(rw_layer, client))
        if task:
            options = runc_options.CheckpointOptions(exit=exit, file_locks=True)
            manifests.extend(_entry(d, client) for d in _dump(client, container.id, options))
            data = typeurl.pack(options).SerializeToString()
            desc = write_blob(
                client, data, MEDIA_TYPE_OPTIONS, f"{container.id}-checkpoint-options", {}
            )
            manifests.append(_entry(desc, client))
        index = _write_index(client, manifests, annotations, f"{container.id}index")
        return client.create_image(ref, index)


# -- restoring ------------------------------------------------------------------------


def read_index(checkpoint: Image) -> dict[str, Any]:
    if checkpoint.target.media_type not in formats.INDEXES:
        raise InvalidArgument(f"{checkpoint.name} is not a checkpoint: its target is no index")
    data = checkpoint.client._read_blob(checkpoint.target.digest)
    return formats.parse_json(data, f"checkpoint {checkpoint.name}")


def _find(index: dict[str, Any], media_type: str) -> Descriptor | None:
    for entry in index.get("manifests") or []:
        if isinstance(entry, dict) and entry.get("mediaType") == media_type:
            return formats.descriptor_from_json(entry)
    return None


def checkpoint_descriptor(checkpoint: Image) -> Descriptor:
    """The criu dump of a checkpoint image (containerd's ``WithTaskCheckpoint``)."""
    found = _find(read_index(checkpoint), MEDIA_TYPE_CRIU)
    if found is None:
        raise NotFound(f"checkpoint {checkpoint.name} holds no criu dump")
    return found


def with_restore_image(checkpoint: Image) -> ContainerOpt:
    """The checkpointed container's image, and a new snapshot of it named after the
    container, in the checkpointed snapshotter."""

    def opt(client: Client, record: ContainerRecord) -> None:
        annotations = read_index(checkpoint).get("annotations") or {}
        name = annotations.get(ANNOTATION_IMAGE_NAME) or annotations.get(ANNOTATION_TASK_IMAGE_NAME)
        if not name:
            raise NotFound(f"checkpoint {checkpoint.name} names no image")
        snapshotter = annotations.get(ANNOTATION_SNAPSHOTTER) or client.default_snapshotter()
        image = client.get_image(name)
        if not image.is_unpacked(snapshotter):
            image.unpack(snapshotter)
        client.snapshot_service(snapshotter).prepare(record.id, image.chain_id())
        record.image, record.snapshotter, record.snapshot_key = name, snapshotter, record.id

    return opt


def with_restore_runtime(checkpoint: Image) -> ContainerOpt:
    """The checkpointed container's runtime and its options."""

    def opt(client: Client, record: ContainerRecord) -> None:
        index = read_index(checkpoint)
        name = (index.get("annotations") or {}).get(ANNOTATION_RUNTIME)
        if name:
            record.runtime = name
        blob = _find(index, MEDIA_TYPE_RUNTIME_OPTIONS)
        if blob is not None:
            options = any_pb2.Any()
            options.ParseFromString(client._read_blob(blob.digest))
            record.runtime_options = options

    return opt


def with_restore_spec(checkpoint: Image) -> ContainerOpt:
    """The checkpointed container's spec."""

    def opt(client: Client, record: ContainerRecord) -> None:
        blob = _find(read_index(checkpoint), MEDIA_TYPE_CONFIG)
        if blob is None:
            raise NotFound(f"checkpoint {checkpoint.name} holds no spec")
        spec = any_pb2.Any()
        spec.ParseFromString(client._read_blob(blob.digest))
        record.spec = spec

    return opt


def with_restore_rw(checkpoint: Image) -> ContainerOpt:
    """The checkpointed file changes, applied onto the container's new snapshot (after
    :func:`with_restore_image`)."""

    def opt(client: Client, record: ContainerRecord) -> None:
        layer = _find(read_index(checkpoint), MEDIA_TYPE_LAYER_GZIP)
        if layer is None:
            raise NotFound(f"checkpoint {checkpoint.name} holds no file changes")
        mounts = client.snapshot_service(record.snapshotter).mounts(record.snapshot_key)
        client.diff_service().apply(layer, mounts)

    return opt
