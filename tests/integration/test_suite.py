"""The embedded suite as a whole: Debian's ctr against berthd, restarts, namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import empty_pb2

from shared import typeurl
from shared.api.containerd.events import namespace_pb2
from shared.api.containerd.services.containers.v1 import containers_pb2, containers_pb2_grpc
from shared.api.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from shared.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from shared.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from shared.api.containerd.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from shared.api.containerd.services.version.v1 import version_pb2_grpc
from shared.config import grpc_target
from shared.version import server_version
from tests.harness import CTR, Suite, pid_alive, wait_until

NS = [("containerd-namespace", "default")]


@pytest.fixture
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target(suite.address)) as ch:
        yield ch


def test_ctr_version_prints_berth(suite: Suite) -> None:
    out = suite.ctr("version").stdout
    server = out.split("Server:", 1)[1]
    assert f"Version:  {server_version()}" in server
    assert "UUID: " in server


def test_ctr_plugins_ls_lists_running_services(suite: Suite) -> None:
    out = suite.ctr("plugins", "ls").stdout
    rows = {tuple(line.split()[:2]) for line in out.splitlines()[1:] if line.strip()}
    for expected in [
        ("io.containerd.grpc.v1", "version"),
        ("io.containerd.grpc.v1", "introspection"),
        ("io.containerd.grpc.v1", "events"),
        ("io.containerd.grpc.v1", "content"),
        ("io.containerd.content.v1", "content"),
    ]:
        assert expected in rows, out
    statuses = {
        tuple(line.split()[:2]): line.split()[-1] for line in out.splitlines()[1:] if line.strip()
    }
    # btrfs is skipped where the root is not on btrfs, as containerd does.
    assert statuses.pop(("io.containerd.snapshotter.v1", "btrfs")) == "skip", out
    assert set(statuses.values()) == {"ok"}, out
    only = suite.ctr("plugins", "ls", "type==io.containerd.content.v1").stdout
    assert [line.split()[1] for line in only.splitlines()[1:] if line.strip()] == ["content"]


def test_ctr_events_prints_a_published_event(suite: Suite, channel: grpc.Channel) -> None:
    events = subprocess.Popen(
        [CTR, "--address", suite.address, "events"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        stub = events_pb2_grpc.EventsStub(channel)
        event = namespace_pb2.NamespaceCreate(name="from-a-test", labels={"k": "v"})
        request = events_pb2.PublishRequest(topic="/namespaces/create", event=typeurl.pack(event))
        assert events.stdout is not None
        os.set_blocking(events.stdout.fileno(), False)
        seen = ""

        def printed() -> bool:
            # ctr may subscribe after our first publish: publish until it shows one.
            nonlocal seen
            stub.Publish(request, metadata=NS)
            time.sleep(0.2)
            with contextlib.suppress(BlockingIOError):
                seen += os.read(events.stdout.fileno(), 65536).decode()  # type: ignore[union-attr]
            return "from-a-test" in seen

        wait_until(printed, 20, interval=0.1, what="ctr events to print the event")
        line = next(line for line in seen.splitlines() if "from-a-test" in line)
        assert " default /namespaces/create " in line
        assert '{"name":"from-a-test","labels":{"k":"v"}}' in line
    finally:
        events.terminate()
        events.wait(10)
        events.stdout.close()  # type: ignore[union-attr]


def test_namespace_errors_are_containerds(channel: grpc.Channel) -> None:
    content = content_pb2_grpc.ContentStub(channel)
    events = events_pb2_grpc.EventsStub(channel)
    info = content_pb2.InfoRequest(digest="sha256:" + "a" * 64)
    publish = events_pb2.PublishRequest(
        topic="/namespaces/create", event=typeurl.pack(namespace_pb2.NamespaceCreate(name="x"))
    )
    for call, request in ((content.Info, info), (events.Publish, publish)):
        with pytest.raises(grpc.RpcError) as missing:
            call(request)
        assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "namespace is required" in missing.value.details()
        with pytest.raises(grpc.RpcError) as invalid:
            call(request, metadata=[("containerd-namespace", "no/slashes")])
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "namespace 'no/slashes'" in invalid.value.details()


def test_unknown_service_is_unimplemented(channel: grpc.Channel) -> None:
    method = channel.unary_unary("/no.such.v1.Service/Method")
    with pytest.raises(grpc.RpcError) as err:
        method(b"", metadata=NS)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _version(channel: grpc.Channel) -> None:
    version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=5)


def _content(channel: grpc.Channel) -> None:
    list(content_pb2_grpc.ContentStub(channel).List(content_pb2.ListContentRequest(), metadata=NS,
                                                    timeout=5))  # fmt: skip


def _snapshots(channel: grpc.Channel) -> None:
    list(snapshots_pb2_grpc.SnapshotsStub(channel).List(
        snapshots_pb2.ListSnapshotsRequest(snapshotter="overlayfs"), metadata=NS, timeout=5))  # fmt: skip


def _images(channel: grpc.Channel) -> None:
    images_pb2_grpc.ImagesStub(channel).List(images_pb2.ListImagesRequest(), metadata=NS, timeout=5)


def _containers(channel: grpc.Channel) -> None:
    containers_pb2_grpc.ContainersStub(channel).List(
        containers_pb2.ListContainersRequest(), metadata=NS, timeout=5
    )


# One call per process that serves the API, each routed to that process alone.
CHECKS: dict[str, Callable[[grpc.Channel], None]] = {
    "gateway": _version,
    "content": _content,
    "snapshots": _snapshots,
    "images": _images,
    "runtime": _containers,
}


@pytest.mark.parametrize(
    "victim", ["content", "snapshots", "images", "runtime", "gateway", "router", "nats-server"]
)
def test_kill_9_one_process(fresh_suite: Suite, victim: str) -> None:
    before = fresh_suite.processes()
    with grpc.insecure_channel(grpc_target(fresh_suite.address)) as ch:
        for check in CHECKS.values():
            check(ch)
        os.kill(before[victim], signal.SIGKILL)
        if victim in CHECKS:
            # Calls routed to the dead process fail at once with UNAVAILABLE ...
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                CHECKS[victim](ch)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 1.0
            # ... while the other services keep answering.
            for name, check in CHECKS.items():
                if name != victim:
                    check(ch)

        def restarted() -> bool:
            pid = fresh_suite.processes().get(victim)
            return pid is not None and pid != before[victim] and pid_alive(pid)

        wait_until(restarted, 20, what=f"berthd to restart {victim}")

        def all_answer() -> bool:
            try:
                for check in CHECKS.values():
                    check(ch)
            except grpc.RpcError:
                return False
            return True

        wait_until(all_answer, 20, what=f"calls to succeed after {victim} restarted")
    assert not pid_alive(before[victim])


def test_sigterm_leaves_nothing_behind() -> None:
    suite = Suite().start()
    try:
        pids = suite.processes()
        leaked = suite.stop()
        assert leaked == []
        assert suite.process is not None
        assert suite.process.returncode == 0
        assert not any(pid_alive(pid) for pid in pids.values())
        sockets = [p for p in suite.state.rglob("*.sock")]
        assert sockets == []
        with open("/proc/mounts") as mounts:
            assert str(suite.dir) not in mounts.read()
    finally:
        suite.cleanup()


def test_subscribe_says_when_it_is_live(suite: Suite, channel: grpc.Channel) -> None:
    """The gateway's initial metadata on Subscribe means: from now on nothing is missed."""
    stub = events_pb2_grpc.EventsStub(channel)
    stream = stub.Subscribe(
        events_pb2.SubscribeRequest(filters=['topic=="/berth-test/live"']),
        metadata=[("containerd-namespace", "live")], timeout=30,
    )  # fmt: skip
    assert ("berth-subscribed", "1") in tuple(stream.initial_metadata())
    stub.Publish(
        events_pb2.PublishRequest(
            topic="/berth-test/live", event=typeurl.pack(namespace_pb2.NamespaceCreate(name="x"))
        ),
        metadata=[("containerd-namespace", "live")],
    )
    first = next(stream)  # published once, right after the headers: it must arrive
    assert (first.topic, first.namespace) == ("/berth-test/live", "live")
    stream.cancel()
