"""The client library's containers and tasks against a real suite: output, exit codes, stdin,
users, exec, signals, pause, terminals, log files, read-only roots, and records that Debian's
ctr makes and reads exactly as the library does."""

from __future__ import annotations

import io
import json
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import berth
from berth import cio, oci
from tests.harness import Suite, wait_until
from tests.integration.client_support import clean_namespace, ctr, remove, run
from tests.testimages import Registry

NS = "client-containers"


@pytest.fixture(scope="module")
def client(suite: Suite) -> Iterator[berth.Client]:
    with berth.Client(suite.address, namespace=NS) as c:
        yield c
        clean_namespace(c)


@pytest.fixture(scope="module")
def busybox(client: berth.Client, registry: Registry) -> berth.Image:
    return client.pull(registry.ref("busybox"))


@pytest.fixture(scope="module")
def multilayer(client: berth.Client, registry: Registry) -> berth.Image:
    return client.pull(registry.ref("multilayer"))


@pytest.fixture
def sleeper(client: berth.Client, busybox: berth.Image) -> Iterator[berth.Task]:
    container = client.new_container(
        "sleeper",
        snapshot=berth.with_new_snapshot("sleeper", busybox),
        spec=berth.with_new_spec(
            oci.with_image_config(busybox), oci.with_process_args("sleep", "600")
        ),
    )
    task = container.new_task()
    task.start()
    yield task
    remove(container)


def test_output_and_exit_code(client: berth.Client, busybox: berth.Image) -> None:
    code, out, err = run(client, "c-echo", busybox, "sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert (code, out, err) == (3, b"hello\n", b"oops\n")
    assert client.containers() == []


def test_image_config_gives_env_and_working_dir(
    client: berth.Client, multilayer: berth.Image
) -> None:
    _, out, _ = run(client, "c-env", multilayer, "sh", "-c", 'pwd; echo "$FOO/$BAR"',
                    opts=(oci.with_env({"BAR": "baz"}),))  # fmt: skip
    assert out == b"/opt/app\nbar/baz\n"


def test_stdin_flows_in(client: berth.Client, busybox: berth.Image) -> None:
    _, out, _ = run(client, "c-stdin", busybox, "sh", "-c", "cat | wc -c", stdin=b"twelve bytes")
    assert out.strip() == b"12"


def test_user_by_name_from_the_image(client: berth.Client, busybox: berth.Image) -> None:
    _, out, _ = run(client, "c-user", busybox, "id", opts=(oci.with_user("nobody"),))
    assert out == b"uid=65534(nobody) gid=65534(nobody) groups=65534(nobody)\n"
    with pytest.raises(berth.NotFound, match="nobody-at-all"):
        run(client, "c-user2", busybox, "id", opts=(oci.with_user("nobody-at-all"),))
    assert client.containers() == []


def test_wait_after_the_exit_still_answers(client: berth.Client, busybox: berth.Image) -> None:
    container = client.new_container(
        "c-late", snapshot=berth.with_new_snapshot("c-late", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox), oci.with_process_args("true")),
    )  # fmt: skip
    try:
        task = container.new_task()
        assert task.pid > 0 and task.status() is berth.Status.CREATED
        task.start()
        wait_until(lambda: task.status() is berth.Status.STOPPED, 30)
        assert task.wait().result(10).code == 0
        status = task.delete()
        assert status.code == 0 and status.exited_at is not None
    finally:
        remove(container)


def test_exec_pids_pause_metrics_kill(sleeper: berth.Task) -> None:
    out = io.BytesIO()
    process = sleeper.exec("x1", io=cio.with_streams(None, out),
                           args=["sh", "-c", "echo in-exec; sleep 1; exit 4"])  # fmt: skip
    exited = process.wait()
    process.start()
    assert any(p.exec_id == "x1" and p.pid == process.pid for p in sleeper.pids())
    assert exited.result(30).code == 4
    assert process.delete().code == 4
    assert out.getvalue() == b"in-exec\n"
    with pytest.raises(berth.NotFound):
        sleeper.load_process("x1")

    sleeper.pause()
    assert sleeper.status() is berth.Status.PAUSED
    sleeper.resume()
    assert sleeper.status() is berth.Status.RUNNING
    assert type(sleeper.metrics()).__name__ == "Metrics"

    exited = sleeper.wait()
    with pytest.raises(TimeoutError):
        exited.result(0.2)
    sleeper.kill("SIGKILL")  # init ignores what it has no handler for, such as SIGTERM
    assert exited.result(30).code == 128 + 9
    assert sleeper.delete().code == 137


def test_delete_refuses_what_runs_unless_forced(client: berth.Client, sleeper: berth.Task) -> None:
    container = client.load_container("sleeper")
    with pytest.raises(berth.FailedPrecondition, match="stopped"):
        sleeper.delete()
    with pytest.raises(berth.FailedPrecondition, match="task"):
        container.delete()
    assert sleeper.delete(force=True).code == 137
    container.delete()
    with pytest.raises(berth.NotFound):
        client.load_container("sleeper")


def test_log_file(client: berth.Client, busybox: berth.Image, tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    container = client.new_container(
        "c-log", snapshot=berth.with_new_snapshot("c-log", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox),
                                 oci.with_process_args("sh", "-c", "echo to-log; echo err >&2")),
    )  # fmt: skip
    try:
        task = container.new_task(cio.log_file(log))
        exited = task.wait()
        task.start()
        assert exited.result(30).code == 0
        task.delete()
    finally:
        remove(container)
    assert sorted(log.read_bytes().splitlines()) == [b"err", b"to-log"]


def test_terminal_on_an_open_pty(client: berth.Client, busybox: berth.Image) -> None:
    master, slave = os.openpty()
    container = client.new_container(
        "c-tty", snapshot=berth.with_new_snapshot("c-tty", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox), oci.with_tty,
                                 oci.with_process_args("sh", "-c", "sleep 1; tty; stty size")),
    )  # fmt: skip
    output = b""
    try:
        task = container.new_task(cio.terminal(master))
        exited = task.wait()
        task.start()
        task.resize(123, 45)
        assert exited.result(30).code == 0
        task.delete()
        while select.select([slave], [], [], 1)[0]:
            output += os.read(slave, 4096)
    finally:
        remove(container)
        os.close(master)
        os.close(slave)
    assert b"/dev/pts/" in output
    assert b"45 123" in output


def test_terminal_into_a_buffer(client: berth.Client, busybox: berth.Image) -> None:
    out = io.BytesIO()
    container = client.new_container(
        "c-tty2", snapshot=berth.with_new_snapshot("c-tty2", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox), oci.with_tty,
                                 oci.with_process_args("sh", "-c", "test -t 1 && echo on-a-tty")),
    )  # fmt: skip
    try:
        task = container.new_task(cio.with_streams(None, out, terminal=True))
        exited = task.wait()
        task.start()
        assert exited.result(30).code == 0
        task.delete()
    finally:
        remove(container)
    assert out.getvalue() == b"on-a-tty\r\n"


def test_snapshot_view_is_read_only(client: berth.Client, busybox: berth.Image) -> None:
    err = io.BytesIO()
    container = client.new_container(
        "c-view", snapshot=berth.with_new_snapshot_view("c-view", busybox),
        # The image has no /run to mount a tmpfs on, and a view cannot make one.
        spec=berth.with_new_spec(oci.with_image_config(busybox), oci.without_mounts("/run"),
                                 oci.with_process_args("touch", "/written")),
    )  # fmt: skip
    try:
        task = container.new_task(cio.with_streams(None, None, err))
        exited = task.wait()
        task.start()
        assert exited.result(30).code != 0
        task.delete()
    finally:
        remove(container)
    assert b"Read-only file system" in err.getvalue()


def test_namespaces_keep_containers_apart(client: berth.Client, busybox: berth.Image) -> None:
    container = client.new_container(
        "c-ns", snapshot=berth.with_new_snapshot("c-ns", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox)),
    )  # fmt: skip
    try:
        other = client.with_namespace("client-containers-other")
        assert other.containers() == []
        with berth.namespace("client-containers-other"):
            assert client.namespace == "client-containers-other"
            assert client.containers() == []
            with pytest.raises(berth.NotFound):
                client.load_container("c-ns")
        assert [c.id for c in client.containers()] == ["c-ns"]
        other.close()  # a view: the shared connection stays open
        assert [c.id for c in client.containers("id==c-ns")] == ["c-ns"]
    finally:
        remove(container)


def test_container_errors(client: berth.Client, busybox: berth.Image) -> None:
    spec = berth.with_new_spec(oci.with_image_config(busybox))
    with pytest.raises(berth.InvalidArgument):
        client.new_container("not valid", spec=spec)
    client.new_container("c-dup", spec=spec)
    try:
        with pytest.raises(berth.AlreadyExists):
            client.new_container("c-dup", spec=spec)
    finally:
        client.load_container("c-dup").delete()
    with pytest.raises(berth.NotFound):
        client.load_container("c-nothing")


# -- the same records as ctr's -------------------------------------------------------


def ctr_container(suite: Suite, container_id: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ctr(suite, NS, "containers", "info", container_id).stdout)
    return info


def comparable(info: dict[str, Any], container_id: str) -> dict[str, Any]:
    """A container record less what must differ: id, times, and the spec's version (Debian's
    ctr is 1.6, built against runtime-spec 1.0.2-dev; containerd 1.7 writes 1.1.0)."""
    spec = dict(info["Spec"])
    spec.pop("ociVersion")
    assert spec["linux"]["cgroupsPath"] == f"/{NS}/{container_id}"
    spec["linux"] = {**spec["linux"], "cgroupsPath": "<id>"}
    assert info["SnapshotKey"] == container_id
    keep = ("Labels", "Image", "Runtime", "Snapshotter")
    return {"Spec": spec, **{k: info[k] for k in keep}}


# ctr's flags, and the options that make the same spec: those ctr applies before the image
# config (env, mounts), then those after it (cwd, tty, privileges, network, resources).
CASES: dict[str, tuple[list[str], tuple[oci.SpecOpt, ...], tuple[oci.SpecOpt, ...]]] = {
    "plain": ([], (), ()),
    "host-network-tty-env-memory": (
        ["--net-host", "--tty", "--env", "A=B", "--memory-limit", "1000000", "--cwd", "/tmp"],
        (oci.with_env(["A=B"]),),
        (oci.with_process_cwd("/tmp"), oci.with_tty, oci.with_host_network,
         oci.with_memory_limit(1000000)),
    ),
    "privileged": (
        ["--privileged"],
        (),
        (oci.with_privileged, oci.with_all_devices_allowed, oci.with_host_devices),
    ),
    "mount-cpus": (
        ["--mount", "type=bind,src=/tmp,dst=/host,options=rbind:ro",
         "--cpu-quota", "150000", "--cpu-period", "100000"],
        (oci.with_mounts([oci.bind_mount("/tmp", "/host", readonly=True)]),),
        (oci.with_cpus(1.5),),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_records_are_ctrs(
    client: berth.Client, suite: Suite, multilayer: berth.Image, case: str
) -> None:
    flags, early, late = CASES[case]
    ctr_id, lib_id = f"ctr-{case}", f"lib-{case}"
    # (No "-c" in the command: with some flags ctr would take it for its --config.)
    ctr(suite, NS, "containers", "create", *flags, multilayer.name, ctr_id, "echo", "hi")
    client.new_container(
        lib_id,
        berth.with_image_config_labels(multilayer),
        berth.with_image_stop_signal(multilayer),
        image=multilayer,
        snapshot=berth.with_new_snapshot(lib_id, multilayer),
        spec=berth.with_new_spec(
            oci.with_default_unix_devices, *early, oci.with_image_config(multilayer),
            oci.with_process_args("echo", "hi"), *late,
        ),
    )  # fmt: skip
    try:
        mine, theirs = ctr_container(suite, lib_id), ctr_container(suite, ctr_id)
        assert comparable(mine, lib_id) == comparable(theirs, ctr_id)
        assert mine["Runtime"] == {"Name": "io.containerd.runc.v2",
                                   "Options": {"type_url": "containerd.runc.v1.Options"}}  # fmt: skip
        # And the library reads ctr's record as its own.
        record = client.load_container(ctr_id).info()
        assert record.runtime == "io.containerd.runc.v2"
        assert record.snapshot_key == ctr_id and record.image == multilayer.name
    finally:
        ctr(suite, NS, "containers", "delete", ctr_id)
        client.load_container(lib_id).delete()


def test_ctr_runs_what_the_library_made(
    client: berth.Client, suite: Suite, busybox: berth.Image
) -> None:
    client.new_container(
        "lib-made", image=busybox, snapshot=berth.with_new_snapshot("lib-made", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox),
                                 oci.with_process_args("sh", "-c", "echo from-the-library; exit 5")),
    )  # fmt: skip
    listing = ctr(suite, NS, "containers", "ls").stdout
    assert any(
        line.split() == ["lib-made", busybox.name, "io.containerd.runc.v2"]
        for line in listing.splitlines()
    )
    result = ctr(suite, NS, "tasks", "start", "lib-made", check=False)
    assert (result.returncode, result.stdout) == (5, "from-the-library\n")
    ctr(suite, NS, "containers", "delete", "lib-made")
    with pytest.raises(berth.NotFound):
        client.load_container("lib-made")
    # ctr removed the snapshot with the container, as it does for its own.
    with pytest.raises(berth.NotFound):
        client.snapshot_service().stat("lib-made")


def test_the_library_runs_what_ctr_made(
    client: berth.Client, suite: Suite, busybox: berth.Image
) -> None:
    ctr(suite, NS, "containers", "create", busybox.name, "ctr-made", "echo", "from-ctr")
    container = client.load_container("ctr-made")
    out = io.BytesIO()
    task = container.new_task(cio.with_streams(None, out))
    exited = task.wait()
    task.start()
    assert exited.result(30).code == 0
    task.delete()
    container.delete()
    assert out.getvalue() == b"from-ctr\n"
    assert "ctr-made" not in ctr(suite, NS, "containers", "ls").stdout
    assert "ctr-made" not in ctr(suite, NS, "snapshots", "ls").stdout


def test_fifos_are_gone_after_delete(
    client: berth.Client, busybox: berth.Image, tmp_path: Path
) -> None:
    fifo_dir = tmp_path / "fifos"
    out = io.BytesIO()
    container = client.new_container(
        "c-fifo", snapshot=berth.with_new_snapshot("c-fifo", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox), oci.with_process_args("true")),
    )  # fmt: skip
    try:
        task = container.new_task(cio.with_streams(io.BytesIO(b""), out, out,
                                                   fifo_dir=str(fifo_dir)))  # fmt: skip
        made = [p.name for p in fifo_dir.glob("*/*")]
        assert sorted(made) == ["c-fifo-stderr", "c-fifo-stdin", "c-fifo-stdout"]
        exited = task.wait()
        task.start()
        exited.result(30)
        started = time.monotonic()
        task.delete()
        assert time.monotonic() - started < 10
    finally:
        remove(container)
    assert list(fifo_dir.iterdir()) == []


def test_close_io_ends_the_input(client: berth.Client, busybox: berth.Image) -> None:
    read_end, write_end = os.pipe()  # stays open: only close_io ends the input
    out = io.BytesIO()
    container = client.new_container(
        "c-closeio", snapshot=berth.with_new_snapshot("c-closeio", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox),
                                 oci.with_process_args("sh", "-c", "cat | wc -c")),
    )  # fmt: skip
    try:
        task = container.new_task(cio.with_streams(read_end, out))
        exited = task.wait()
        task.start()
        os.write(write_end, b"abc")
        with pytest.raises(TimeoutError):
            exited.result(0.5)
        task.close_io()
        assert exited.result(30).code == 0
        task.delete()
    finally:
        remove(container)
        os.close(read_end)
        os.close(write_end)
    assert out.getvalue().strip() == b"3"


def test_detach_and_attach_again(client: berth.Client, busybox: berth.Image) -> None:
    first, second = io.BytesIO(), io.BytesIO()
    container = client.new_container(
        "c-attach", snapshot=berth.with_new_snapshot("c-attach", busybox),
        spec=berth.with_new_spec(oci.with_image_config(busybox), oci.with_process_args(
            "sh", "-c", "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo tick $i; sleep 0.1; done")),
    )  # fmt: skip
    try:
        task = container.new_task(cio.with_streams(None, first))
        task.start()
        wait_until(lambda: b"tick 3\n" in first.getvalue(), 30)
        assert task.io is not None
        task.io.detach()  # this client goes; the FIFOs and the process stay
        again = container.task(attach=cio.with_streams(None, second))
        assert again.pid == task.pid
        assert again.wait().result(30).code == 0
        again.delete()
    finally:
        remove(container)
    # The second client got the rest, where the first had stopped.
    ticks = (first.getvalue() + second.getvalue()).split(b"\n")
    assert b"tick 30" in ticks and b"tick 30\n" in second.getvalue()


def test_update_resources(client: berth.Client, sleeper: berth.Task) -> None:
    sleeper.update({"memory": {"limit": 64 << 20}})
    metrics: Any = sleeper.metrics()
    limit = (
        metrics.memory.usage.limit
        if hasattr(metrics.memory, "usage")
        else metrics.memory.usage_limit
    )
    assert limit == 64 << 20
