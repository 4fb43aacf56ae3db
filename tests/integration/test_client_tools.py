"""What the client library offers tools such as the berth CLI, against a real suite: task
listings, image platforms, namespace labels, leases held across calls, mounts, runc options,
log URIs, and an unreachable suite told apart from other unavailability."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import berth
from berth import cio, oci
from tests.harness import Suite
from tests.integration.client_support import clean_namespace, remove
from tests.testimages import Registry

NS = "client-tools"


@pytest.fixture(scope="module")
def client(suite: Suite) -> Iterator[berth.Client]:
    with berth.Client(suite.address, namespace=NS) as c:
        yield c
        clean_namespace(c)


@pytest.fixture(scope="module")
def busybox(client: berth.Client, registry: Registry) -> berth.Image:
    return client.pull(registry.ref("busybox"))


def sleeper(
    client: berth.Client, image: berth.Image, name: str, **kwargs: object
) -> berth.Container:
    return client.new_container(
        name,
        snapshot=berth.with_new_snapshot(name, image),
        spec=berth.with_new_spec(
            oci.with_image_config(image), oci.with_process_args("sleep", "600")
        ),
        **kwargs,  # type: ignore[arg-type]
    )


def test_tasks_are_listed_with_pid_and_status(client: berth.Client, busybox: berth.Image) -> None:
    container = sleeper(client, busybox, "listed")
    try:
        task = container.new_task()
        assert [(t.container_id, t.status) for t in client.tasks()] == [
            ("listed", berth.Status.CREATED)
        ]
        task.start()
        (info,) = client.tasks()
        assert info == berth.TaskInfo("listed", task.pid, berth.Status.RUNNING)
        exited = task.wait()
        task.kill("SIGKILL")
        exited.result(30)
        (info,) = client.tasks()
        assert info.status is berth.Status.STOPPED and info.exit_status == 137
        assert info.exited_at is not None
    finally:
        remove(container)
    assert client.tasks() == []


def test_image_platforms(client: berth.Client, busybox: berth.Image, registry: Registry) -> None:
    assert busybox.platforms() == [berth.Platform("linux", "amd64")]
    index = client.pull(registry.ref("multiarch"), unpack=False)
    platforms = index.platforms()
    assert berth.Platform("linux", "amd64") in platforms
    assert berth.Platform("linux", "arm64", "v8") in platforms


def test_namespace_labels(client: berth.Client) -> None:
    client.create_namespace("client-tools-labels", {"a": "1"})
    try:
        after = client.set_namespace_labels("client-tools-labels", {"a": "", "b": "2"})
        assert after == {"b": "2"}
        assert client.namespace_labels("client-tools-labels") == {"b": "2"}
    finally:
        client.delete_namespace("client-tools-labels")


def test_a_lease_used_for_some_calls_outlives_them(
    client: berth.Client, busybox: berth.Image
) -> None:
    lease = client.create_lease("client-tools-held", expire=None)
    try:
        service = client.snapshot_service()
        with lease.use():
            service.view("held-view", busybox.chain_id(), None)
        assert berth.Resource("held-view", "snapshots/overlayfs") in lease.resources()
        assert [held.id for held in client.leases("id==client-tools-held")] == [lease.id]
    finally:
        lease.delete()
        client.snapshot_service().remove("held-view")


def test_mount_a_view_and_unmount_it(
    client: berth.Client, busybox: berth.Image, tmp_path: Path
) -> None:
    service = client.snapshot_service()
    with client.lease():
        mounts = service.view("mounted-view", busybox.chain_id(), None)
        target = tmp_path / "root"
        target.mkdir()
        berth.mount.mount_all(mounts, str(target))
        try:
            assert (target / "bin" / "busybox").exists()
            assert berth.mount.command(mounts[0], str(target)).startswith(
                f"mount -t {mounts[0].type} {mounts[0].source} {target} -o "
            )
        finally:
            berth.mount.unmount_all(str(target))
        assert not (target / "bin").exists()
        berth.mount.unmount_all(str(target))  # nothing mounted: nothing to do
        service.remove("mounted-view")


def test_runc_options_choose_the_binary(
    client: berth.Client, busybox: berth.Image, suite: Suite
) -> None:
    options = berth.runc_options(binary_name="crun")
    container = sleeper(client, busybox, "crun-one", runtime_options=options)
    try:
        task = container.new_task()
        task.start()
        shim = json.loads((suite.state / "runtime/tasks" / NS / "crun-one/shim.json").read_text())
        assert Path(shim["runtime"]).name == "crun"
        assert task.status() is berth.Status.RUNNING
    finally:
        remove(container)


def test_log_uri_sends_output_to_the_file(
    client: berth.Client, busybox: berth.Image, tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    container = client.new_container(
        "logged",
        snapshot=berth.with_new_snapshot("logged", busybox),
        spec=berth.with_new_spec(
            oci.with_image_config(busybox), oci.with_process_args("echo", "to the log")
        ),
    )
    try:
        task = container.new_task(cio.log_uri(f"file://{log}"))
        exited = task.wait()
        task.start()
        assert exited.result(30).code == 0
        task.delete()
    finally:
        remove(container)
    assert log.read_text() == "to the log\n"
    assert cio.log_uri(str(log)).__class__ is cio.log_file(str(log)).__class__


def test_unreachable_is_unavailable_with_the_address(tmp_path: Path) -> None:
    address = str(tmp_path / "nothing.sock")
    with berth.Client(address) as nowhere, pytest.raises(berth.Unreachable) as caught:
        nowhere.list_images()
    assert caught.value.address == address
    assert isinstance(caught.value, berth.Unavailable)
    assert os.fspath(address) in str(caught.value)
