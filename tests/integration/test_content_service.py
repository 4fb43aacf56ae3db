"""The content service as a real process: the contract over gRPC, Debian's ctr, crashes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shared import config as berth_config
from shared import context
from shared.api.containerd.events import content_pb2 as content_events
from shared.api.containerd.services.content.v1 import content_pb2 as api
from shared.api.containerd.services.content.v1 import content_pb2_grpc
from shared.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from shared.errors import Internal, ResourceExhausted, Unavailable
from shared.proxy.content import ContentProxy
from shared.rpc.sync_client import channel
from tests.conformance.content import ContentStoreConformance, digest_of, read_all
from tests.harness import NatsServer, ServiceProcess, Suite, short_tempdir, wait_until

NS = [("containerd-namespace", "default")]
MIB = 1 << 20


def content_address(suite: Suite) -> str:
    return berth_config.load(suite.config_path, environ={}).services["content"].address


class TestContentThroughGateway(ContentStoreConformance):
    namespace = "conformance-gateway"

    @pytest.fixture
    def store(self, suite: Suite) -> Iterator[ContentProxy]:
        ch = channel(suite.address)
        yield ContentProxy(ch)
        ch.close()


class TestContentDirect(ContentStoreConformance):
    namespace = "conformance-direct"

    @pytest.fixture
    def store(self, suite: Suite) -> Iterator[ContentProxy]:
        ch = channel(content_address(suite))
        yield ContentProxy(ch)
        ch.close()


def test_ctr_content_commands(suite: Suite, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    data = os.urandom(64 * MIB)
    blob.write_bytes(data)
    digest = digest_of(data)
    with open(blob, "rb") as f:
        suite.ctr("content", "ingest", "ctr-64mib", input=f.read(), timeout=120)
    got = subprocess.run(
        ["ctr", "--address", suite.address, "content", "get", digest],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert hashlib.sha256(got).hexdigest() == digest.split(":")[1]
    assert got == data

    listing = suite.ctr("content", "ls").stdout
    row = next(line for line in listing.splitlines() if line.startswith(digest))
    assert "67.11MB" in row or "64MiB" in row or "67MB" in row, row
    assert suite.ctr("content", "ls", "-q").stdout.split().count(digest) == 1

    # ctr prints labels in Go map order.
    printed = suite.ctr("content", "label", digest, "purpose=test", "gc=x").stdout.strip()
    assert set(printed.split(",")) == {"gc=x", "purpose=test"}
    listing = suite.ctr("content", "ls", "labels.purpose==test").stdout
    row = next(line for line in listing.splitlines() if line.startswith(digest))
    assert set(row.split()[-1].split(",")) == {"gc=x", "purpose=test"}
    suite.ctr("content", "label", digest, "gc=")  # an empty value removes a label
    assert "gc=" not in suite.ctr("content", "ls", f"digest=={digest}").stdout

    suite.ctr("content", "rm", digest)
    assert digest not in suite.ctr("content", "ls").stdout
    result = suite.ctr("content", "get", digest, check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr


def test_ctr_content_active_shows_ingests(suite: Suite) -> None:
    with context.using(namespace="default"):
        store = ContentProxy(channel(suite.address))
        w = store.writer("ctr-active-ref", total=10)
        try:
            w.write(b"12345")
            out = suite.ctr("content", "active").stdout
            line = next(line for line in out.splitlines() if line.startswith("ctr-active-ref"))
            assert line.split()[1] == "5B" or "5 B" in line, line
        finally:
            w.close()
            store.abort("ctr-active-ref")
    assert "ctr-active-ref" not in suite.ctr("content", "active").stdout


def _write_stream(
    stub: content_pb2_grpc.ContentStub, requests: list[api.WriteContentRequest]
) -> list[api.WriteContentResponse]:
    return list(stub.Write(iter(requests), metadata=NS, timeout=30))


def test_write_protocol_errors(suite: Suite) -> None:
    with grpc.insecure_channel(berth_config.grpc_target(suite.address)) as ch:
        stub = content_pb2_grpc.ContentStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            _write_stream(stub, [api.WriteContentRequest(action=api.STAT)])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            _write_stream(stub, [
                api.WriteContentRequest(action=api.STAT, ref="proto-errors"),
                api.WriteContentRequest(action=api.WRITE, ref="proto-errors", offset=99, data=b"x"),
            ])  # fmt: skip
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        with pytest.raises(grpc.RpcError) as err:
            _write_stream(stub, [
                api.WriteContentRequest(action=api.STAT, ref="proto-errors"),
                api.WriteContentRequest(action=api.COMMIT, ref="proto-errors", data=b"abc",
                                        total=3, expected=digest_of(b"xyz")),
            ])  # fmt: skip
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "unexpected commit digest" in err.value.details()
        # The rejected bytes are still there for inspection or resume.
        status = stub.Status(api.StatusRequest(ref="proto-errors"), metadata=NS).status
        assert status.offset == 3
        stub.Abort(api.AbortRequest(ref="proto-errors"), metadata=NS)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Read(api.ReadContentRequest(digest="sha256:nothex"), metadata=NS))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_content_events(suite: Suite) -> None:
    data = os.urandom(1000)
    digest = digest_of(data)
    seen: list[events_pb2.Envelope] = []
    with grpc.insecure_channel(berth_config.grpc_target(suite.address)) as ch:
        stream = events_pb2_grpc.EventsStub(ch).Subscribe(
            events_pb2.SubscribeRequest(filters=['topic~="^/content/"'])
        )

        def collect() -> None:
            try:
                for envelope in stream:
                    seen.append(envelope)
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=collect)
        reader.start()
        try:
            with context.using(namespace="events-test"):
                store = ContentProxy(channel(suite.address))

                def created() -> bool:
                    # The subscription may start after the first commit: repeat until seen.
                    store.writer("ev").close()
                    store.abort("ev")
                    w = store.writer("ev", expected=digest)
                    w.write(data)
                    w.commit(len(data), digest)
                    w.close()
                    store.delete(digest)
                    return any(e.topic == "/content/delete" for e in seen)

                wait_until(created, 20, interval=0.3, what="content events")
        finally:
            stream.cancel()
            reader.join(10)
    topics = [(e.namespace, e.topic) for e in seen]
    assert ("events-test", "/content/create") in topics
    create = next(e for e in seen if e.topic == "/content/create")
    assert create.event.type_url == "containerd.events.ContentCreate"
    msg = content_events.ContentCreate()
    msg.ParseFromString(create.event.value)
    assert (msg.digest, msg.size) == (digest, 1000)


def test_kill_9_mid_write_then_resume(fresh_suite: Suite) -> None:
    data = os.urandom(24 * MIB)
    digest = digest_of(data)
    with context.using(namespace="default"):
        store = ContentProxy(channel(fresh_suite.address))
        w = store.writer("crash-ref", total=len(data), expected=digest)
        for start in range(0, 10 * MIB, MIB):
            w.write(data[start : start + MIB])
        before = fresh_suite.processes()["content"]
        os.kill(before, signal.SIGKILL)
        # Through nginx a stream whose backend dies ends with RST_STREAM (INTERNAL).
        with pytest.raises((Unavailable, Internal)):
            w.write(data[10 * MIB : 11 * MIB])
        w.close()

        def restarted_and_resumable() -> bool:
            try:
                return store.status("crash-ref").offset == 10 * MIB
            except Unavailable:
                return False

        wait_until(restarted_and_resumable, 30, what="content to restart with the ingest")
        assert fresh_suite.processes()["content"] != before
        w = store.writer("crash-ref", total=len(data), expected=digest)
        try:
            offset = w.status().offset
            assert offset == 10 * MIB
            for start in range(offset, len(data), MIB):
                w.write(data[start : start + MIB])
            info = w.commit(len(data), digest)
        finally:
            w.close()
        assert info.digest == digest
        assert read_all(store, digest) == data
        assert store.list_statuses() == []


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs as the content root, so the disk fills up for real."""
    root = short_tempdir("berth-full-")
    mount = root / "root"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_full_disk_is_resource_exhausted_and_keeps_the_ingest(
    small_disk: Path, nats: NatsServer
) -> None:
    config = small_disk / "berth.toml"
    config.write_text(
        f'root = "{small_disk / "root"}"\nstate = "{small_disk / "state"}"\n'
        f'[database]\nurl = "sqlite:///{small_disk / "berth.db"}"\n'
        f'[events]\nnats_url = "{nats.url}"\n'
    )
    service = ServiceProcess("content", config, str(small_disk / "content.sock"),
                             small_disk / "content.log").start()  # fmt: skip
    try:
        ballast = small_disk / "root" / "ballast"
        ballast.write_bytes(b"\0" * 8 * MIB)
        with context.using(namespace="default"):
            store = ContentProxy(channel(service.listen))
            data = os.urandom(12 * MIB)
            digest = digest_of(data)
            w = store.writer("too-big", total=len(data), expected=digest)
            with pytest.raises(ResourceExhausted, match="no space left"):
                for start in range(0, len(data), MIB):
                    w.write(data[start : start + MIB])
            w.close()
            kept = store.status("too-big")
            assert 0 < kept.offset < len(data)
            assert kept.offset % MIB == 0  # no half-written chunk is left behind
            # Space comes back: the same ref resumes where it stopped and commits.
            ballast.unlink()
            w = store.writer("too-big", total=len(data), expected=digest)
            try:
                offset = w.status().offset
                assert offset == kept.offset
                for start in range(offset, len(data), MIB):
                    w.write(data[start : start + MIB])
                w.commit(len(data), digest)
            finally:
                w.close()
            assert read_all(store, digest) == data
    finally:
        service.stop()
