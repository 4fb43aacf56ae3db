"""Checkpoint and restore through the client library, with criu: a counter in a shell keeps
counting from where it was, after a trip through a registry, and ctr restores the library's
checkpoints."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator

import pytest

import berth
from berth import cio, oci
from tests.harness import Suite, wait_until
from tests.integration.client_support import clean_namespace, ctr, remove
from tests.testimages import Registry

NS = "client-checkpoint"
CRIU = "/opt/berth/bin/criu"
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; sleep 0.1; done"

pytestmark = pytest.mark.skipif(
    not os.access(CRIU, os.X_OK) and shutil.which("criu") is None,
    reason="criu is not installed (scripts/install.sh brings it)",
)


@pytest.fixture(scope="module")
def client(suite: Suite) -> Iterator[berth.Client]:
    with berth.Client(suite.address, namespace=NS) as c:
        yield c
        clean_namespace(c)


@pytest.fixture(scope="module")
def busybox(client: berth.Client, registry: Registry) -> berth.Image:
    return client.pull(registry.ref("busybox"))


def count(task: berth.Task) -> int:
    out = io.BytesIO()
    reader = task.exec(f"read-{time.monotonic_ns()}", io=cio.with_streams(None, out),
                       args=["cat", "/count"])  # fmt: skip
    exited = reader.wait()
    reader.start()
    exited.result(30)
    reader.delete()
    return int(out.getvalue().strip() or 0)


def counting_past(task: berth.Task, floor: int) -> int:
    return int(wait_until(lambda: (n := count(task)) > floor and n, 30, interval=0.3,
                          what=f"the counter to pass {floor}"))  # fmt: skip


def counter(client: berth.Client, container_id: str, image: berth.Image) -> berth.Task:
    container = client.new_container(
        container_id,
        image=image,
        snapshot=berth.with_new_snapshot(container_id, image),
        spec=berth.with_new_spec(oci.with_image_config(image),
                                 oci.with_process_args("sh", "-c", COUNTER)),
    )  # fmt: skip
    task = container.new_task()
    task.start()
    return task


def index_of(client: berth.Client, image: berth.Image) -> dict[str, object]:
    data: dict[str, object] = json.loads(client._read_blob(image.target.digest))
    return data


def test_task_checkpoint_to_a_registry_and_back(
    client: berth.Client, busybox: berth.Image, registry: Registry
) -> None:
    task = counter(client, "cp-task", busybox)
    before = counting_past(task, 5)
    checkpoint = task.checkpoint()
    # The task goes on (it was only paused), and the checkpoint is the image containerd makes.
    assert task.status() is berth.Status.RUNNING
    assert checkpoint.name.startswith("containerd.io/checkpoint/cp-task:")
    assert checkpoint.labels == {"containerd.io/checkpoint": "true"}
    index = index_of(client, checkpoint)
    kinds = [m["mediaType"] for m in index["manifests"]]  # type: ignore[attr-defined]
    assert kinds == [
        "application/vnd.containerd.container.criu.checkpoint.criu.tar",
        "application/vnd.containerd.container.checkpoint.config.v1+proto",
        busybox.target.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ]
    assert index["annotations"] == {"image.name": busybox.name}
    remove(client.load_container("cp-task"))

    remote = registry.ref("client-checkpoint")
    client.push(remote, checkpoint)
    checkpoint.delete(sync=True)
    pulled = client.pull(remote)
    assert pulled.target.digest == checkpoint.target.digest

    # containerd's README way: a snapshot of the checkpoint's image, its spec, its dump.
    restored = client.new_container(
        "cp-task-restored",
        snapshot=berth.with_new_snapshot("cp-task-restored", pulled),
        spec=berth.with_restore_spec(pulled),
    )
    try:
        task = restored.new_task(checkpoint=pulled)
        task.start()
        # A fresh start would count from 1.
        assert counting_past(task, before) > before
    finally:
        remove(restored)


def test_container_checkpoint_and_restore_with_files(
    client: berth.Client, suite: Suite, busybox: berth.Image
) -> None:
    task = counter(client, "cp-ctr", busybox)
    before = counting_past(task, 5)
    checkpoint = client.load_container("cp-ctr").checkpoint("berth.test/checkpoints/cp-ctr:1")
    index = index_of(client, checkpoint)
    assert index["annotations"] == {
        "org.opencontainers.image.ref.name": busybox.name,
        "io.containerd.checkpoint.runtime": "io.containerd.runc.v2",
        "io.containerd.checkpoint.snapshotter": "overlayfs",
    }
    remove(client.load_container("cp-ctr"))

    restored = client.restore("cp-ctr-restored", checkpoint, rw=True)
    try:
        record = restored.info()
        assert (record.image, record.snapshot_key) == (busybox.name, "cp-ctr-restored")
        task = restored.new_task(checkpoint=checkpoint)
        task.start()
        assert counting_past(task, before) > before
    finally:
        remove(restored)

    # ctr restores the library's checkpoint too.
    ctr(suite, NS, "containers", "restore", "--rw", "--live", "cp-ctr-by-ctr",
        checkpoint.name)  # fmt: skip
    restored = client.load_container("cp-ctr-by-ctr")
    try:
        assert counting_past(restored.task(), before) > before
    finally:
        remove(restored)


def test_checkpoint_with_exit_ends_the_task(client: berth.Client, busybox: berth.Image) -> None:
    task = counter(client, "cp-exit", busybox)
    counting_past(task, 2)
    exited = task.wait()
    task.checkpoint("berth.test/checkpoints/cp-exit:1", exit=True)
    assert exited.result(30) is not None
    assert task.status() is berth.Status.STOPPED
    remove(client.load_container("cp-exit"))


def test_restore_needs_a_checkpoint(client: berth.Client, busybox: berth.Image) -> None:
    with pytest.raises(berth.InvalidArgument, match="not a checkpoint"):
        client.restore("cp-not", busybox)
    assert client.containers() == []
