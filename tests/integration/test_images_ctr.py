"""Debian's ctr against berth's images, leases and namespaces: pull, ls, rm, GC, import/export."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Suite, running_suite, wait_until
from tests.testimages import Images, Registry


@pytest.fixture(scope="module")
def gc_suite() -> Iterator[Suite]:
    """A suite of this module's own with the default garbage collector."""
    with running_suite() as s:
        yield s


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def _digests(suite: Suite, ns: str) -> set[str]:
    return {row[0] for row in _rows(suite.ctr("content", "ls", namespace=ns).stdout)}


def _snapshots(suite: Suite, ns: str) -> set[str]:
    return {row[0] for row in _rows(suite.ctr("snapshots", "ls", namespace=ns).stdout)}


def test_pull_ls_check_rm_with_gc(gc_suite: Suite, registry: Registry, testimages: Images) -> None:
    ns = "pull-rm"
    for name in ("busybox", "multilayer"):
        out = gc_suite.ctr(
            "images", "pull", "--plain-http", registry.ref(name), namespace=ns
        ).stdout
        assert "done" in out
    images = {row[0]: row for row in _rows(gc_suite.ctr("images", "ls", namespace=ns).stdout)}
    assert set(images) == {registry.ref("busybox"), registry.ref("multilayer")}
    assert images[registry.ref("multilayer")][2] == testimages.digest("multilayer")
    check = gc_suite.ctr("images", "check", namespace=ns).stdout
    assert check.count("complete") == 2
    assert all(row[-1] == "true" for row in _rows(check))  # both unpacked

    busybox_layer = testimages.layers("busybox")[0].digest
    multilayer_only = {lay.digest for lay in testimages.layers("multilayer")} - {busybox_layer}
    before = _snapshots(gc_suite, ns)
    assert len(before) == 5  # busybox's layer is multilayer's first: shared, unpacked once

    gc_suite.ctr("images", "rm", "--sync", registry.ref("multilayer"), namespace=ns)
    content = _digests(gc_suite, ns)
    assert busybox_layer in content  # still referenced by busybox
    assert not (multilayer_only & content)  # only multilayer had these
    assert testimages.digest("multilayer") not in content
    assert len(_snapshots(gc_suite, ns)) == 1  # busybox's single layer

    gc_suite.ctr("images", "rm", "--sync", registry.ref("busybox"), namespace=ns)
    assert _digests(gc_suite, ns) == set()
    assert _snapshots(gc_suite, ns) == set()


def test_multiplatform_index_picks_the_host(
    gc_suite: Suite, registry: Registry, testimages: Images
) -> None:
    ns = "multiarch"
    gc_suite.ctr("images", "pull", "--plain-http", registry.ref("multiarch"), namespace=ns)
    row = _rows(gc_suite.ctr("images", "ls", namespace=ns).stdout)[0]
    assert "linux/amd64" in row[-2] and "linux/arm64/v8" in row[-2]
    amd64 = testimages.resolve("multiarch", "linux/amd64").digest
    arm64 = testimages.resolve("multiarch", "linux/arm64").digest
    content = _digests(gc_suite, ns)
    assert amd64 in content
    assert arm64 not in content  # only the host's platform is fetched


def test_leases_keep_content_until_deleted(gc_suite: Suite, tmp_path: Path) -> None:
    ns = "leases"
    out = gc_suite.ctr("leases", "create", "--id", "hold", "--expires", "1h", namespace=ns).stdout
    assert out.strip() == "hold"
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    from shared import context
    from shared.api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
    from shared.images import Resource
    from shared.proxy.content import ContentProxy
    from shared.rpc.sync_client import channel

    # ctr content ingest takes no lease (its own ends with the command): write under "hold"
    # as a client does, so no collection ever finds the blob unreferenced.
    ch = channel(gc_suite.address)
    with context.using(namespace=ns, lease="hold"):
        writer = ContentProxy(ch).writer("leased-ref", len(data), digest)
        writer.write(data)
        writer.commit(len(data), digest)
    with context.using(namespace=ns):
        stub = leases_pb2_grpc.LeasesStub(ch)
        resources = stub.ListResources(leases_pb2.ListResourcesRequest(id="hold")).resources
        assert [Resource(r.id, r.type) for r in resources] == [Resource(digest, "content")]
    ch.close()
    rows = _rows(gc_suite.ctr("leases", "ls", namespace=ns).stdout)
    assert rows[0][0] == "hold"
    assert any("containerd.io/gc.expire=" in field for field in rows[0])
    # A collection (triggered by deleting something) keeps the leased blob.
    other = tmp_path / "other"
    other.write_bytes(b"to delete")
    gc_suite.ctr("content", "ingest", "other", input=other.read_bytes(), namespace=ns)
    gc_suite.ctr("content", "rm", f"sha256:{hashlib.sha256(b'to delete').hexdigest()}", namespace=ns)
    time.sleep(2.5)  # the collector's quiet period after a deletion
    assert digest in _digests(gc_suite, ns)
    gc_suite.ctr("leases", "rm", "--sync", "hold", namespace=ns)
    assert digest not in _digests(gc_suite, ns)


def test_namespaces(gc_suite: Suite) -> None:
    gc_suite.ctr("namespaces", "create", "team-a", "owner=alice")
    gc_suite.ctr("namespaces", "label", "team-a", "tier=dev")
    rows = {row[0]: row[1:] for row in _rows(gc_suite.ctr("namespaces", "ls").stdout)}
    assert set(rows["team-a"][0].split(",")) == {"owner=alice", "tier=dev"}
    gc_suite.ctr("leases", "create", "--id", "x", namespace="team-a")
    refused = gc_suite.ctr("namespaces", "rm", "team-a", check=False)
    assert refused.returncode != 0
    assert "must be empty" in refused.stderr
    gc_suite.ctr("leases", "rm", "x", namespace="team-a")
    gc_suite.ctr("namespaces", "rm", "team-a")
    assert "team-a" not in gc_suite.ctr("namespaces", "ls").stdout


def test_import_export(gc_suite: Suite, testimages: Images, tmp_path: Path) -> None:
    ns = "import-export"
    archive = testimages.archive("multilayer")
    out = gc_suite.ctr("images", "import", str(archive), namespace=ns).stdout
    name = "localhost/testimages/multilayer:latest"
    assert name in out or "unpacking" in out
    row = {r[0]: r for r in _rows(gc_suite.ctr("images", "ls", namespace=ns).stdout)}[name]
    assert row[2] == testimages.digest("multilayer")
    check = _rows(gc_suite.ctr("images", "check", namespace=ns).stdout)
    assert check[0][-1] == "true"  # unpacked on import
    exported = tmp_path / "out.tar"
    gc_suite.ctr("images", "export", str(exported), name, namespace=ns)
    with tarfile.open(exported) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        names = set(tar.getnames())
    assert index["manifests"][0]["digest"] == testimages.digest("multilayer")
    for lay in testimages.layers("multilayer"):
        assert f"blobs/sha256/{lay.digest.split(':')[1]}" in names
    # What berth exported, containerd's ctr imports again elsewhere.
    gc_suite.ctr("images", "import", str(exported), namespace="import-again")
    assert name in gc_suite.ctr("images", "ls", "-q", namespace="import-again").stdout


def test_kill_images_service_mid_gc_loses_nothing_referenced(registry: Registry) -> None:
    with running_suite() as suite:
        ns = "gc-crash"
        suite.ctr("images", "pull", "--plain-http", registry.ref("multilayer"), namespace=ns)
        # Plenty of garbage, so that the collection takes a while.
        for i in range(300):
            suite.ctr("content", "ingest", f"junk-{i}", input=os.urandom(64), namespace=ns)
        garbage_before = len(_digests(suite, ns))
        images_pid = suite.processes()["images"]
        suite.ctr("images", "pull", "--plain-http", registry.ref("busybox"), namespace=ns)
        suite.ctr("images", "rm", registry.ref("busybox"), namespace=ns)  # triggers a collection
        # Kill it while it sweeps: as soon as some garbage is gone.
        wait_until(lambda: len(_digests(suite, ns)) < garbage_before, 30, interval=0.02,
                   what="the collection to start")  # fmt: skip
        os.kill(images_pid, signal.SIGKILL)
        wait_until(
            lambda: suite.ctr("images", "ls", namespace=ns, check=False).returncode == 0,
            30,
            what="the images service to be back",
        )
        # Everything multilayer references is still there.
        check = suite.ctr("images", "check", namespace=ns).stdout.splitlines()[1]
        assert "complete (6/6)" in check
        assert check.split()[-1] == "true"  # still unpacked
        # The next collection finishes the job.
        suite.ctr("content", "ingest", "one-more", input=b"x", namespace=ns)
        suite.ctr(
            "content",
            "rm",
            f"sha256:{__import__('hashlib').sha256(b'x').hexdigest()}",
            namespace=ns,
        )

        def only_multilayer_left() -> bool:
            return len(_digests(suite, ns)) == 7  # manifest, config, 5 layers

        wait_until(only_multilayer_left, 30, what="the next collection to remove the rest")
