"""The garbage collector over real stores: content, snapshots, images, leases on one database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.content.local import LocalStore
from services.content.metadata import NamespacedStore
from services.images.gc import Collector
from services.images.image_store import ImageRecords
from services.images.lease_store import LeaseRecords
from services.snapshots.backends.overlay import OverlayBackend
from services.snapshots.snapshotter import Snapshotter
from services.snapshots.storage import SnapshotStorage
from shared import context
from shared.db import Database, migrate
from shared.diff import Descriptor
from shared.errors import NotFound
from shared.images import Image, Resource
from tests.conformance.content import digest_of, put

NS = "gc-test"


@dataclass
class World:
    content: NamespacedStore
    snapshots: Snapshotter
    images: ImageRecords
    leases: LeaseRecords
    gc: Collector

    def blob(self, name: str, labels: dict[str, str] | None = None) -> str:
        return put(self.content, name.encode(), labels=labels)

    def alive(self, digest: str) -> bool:
        try:
            self.content.info(digest)
        except NotFound:
            return False
        return True

    def snapshot_alive(self, key: str) -> bool:
        try:
            self.snapshots.stat(key)
        except NotFound:
            return False
        return True


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(f"sqlite:///{tmp_path / 'berth.db'}")
    migrate(db.engine)
    content = NamespacedStore(LocalStore(tmp_path / "content"), db)
    sn = Snapshotter(
        "overlayfs", SnapshotStorage(db, "node", "overlayfs"), OverlayBackend(tmp_path / "o")
    )
    gc = Collector(db, "node", content, lambda name: sn if name == "overlayfs" else None)
    with context.using(namespace=NS):
        yield World(content, sn, ImageRecords(db), LeaseRecords(db), gc)
    db.dispose()


def test_an_image_keeps_its_whole_tree(world: World) -> None:
    layer = world.blob("layer")
    world.snapshots.prepare("k1")
    world.snapshots.commit("chain-1", "k1")
    world.snapshots.prepare("k2", "chain-1")
    world.snapshots.commit("chain-2", "k2")
    config = world.blob("config", {"containerd.io/gc.ref.snapshot.overlayfs": "chain-2"})
    manifest = world.blob("manifest", {"containerd.io/gc.ref.content.config": config,
                                       "containerd.io/gc.ref.content.l.0": layer})  # fmt: skip
    index = world.blob("index", {"containerd.io/gc.ref.content.m.0": manifest})
    stray = world.blob("stray")
    world.snapshots.prepare("stray-key")
    world.images.create(
        Image("example.com/app:1", Descriptor("application/vnd.oci.image.index.v1+json", index, 5))
    )

    plan = world.gc.collect(dry_run=True)
    assert plan.content == [(NS, stray)]
    assert plan.snapshots == [(NS, "overlayfs", "stray-key")]
    assert world.alive(stray)  # a dry run removes nothing

    world.gc.collect()
    assert not world.alive(stray)
    assert not world.snapshot_alive("stray-key")
    for kept in (index, manifest, config, layer):
        assert world.alive(kept)
    assert world.snapshot_alive("chain-1")

    world.images.delete("example.com/app:1")
    plan = world.gc.collect()
    assert sorted(plan.content) == sorted((NS, d) for d in (index, manifest, config, layer))
    assert [s[2] for s in plan.snapshots] == ["chain-2", "chain-1"]  # children first
    assert not world.snapshot_alive("chain-1")


def test_leases_protect_and_expire(world: World) -> None:
    with context.using(namespace=NS, lease="pull"):
        world.leases.create("pull", {})
        leased = world.blob("in a lease")  # recorded by the content store itself
    added = world.blob("added to a lease")
    world.leases.add_resource("pull", Resource(added, "content"))
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.leases.create("old", {"containerd.io/gc.expire": past})
    old = world.blob("in an expired lease")
    world.leases.add_resource("old", Resource(old, "content"))

    plan = world.gc.collect()
    assert plan.expired_leases == [(NS, "old")]
    assert plan.content == [(NS, old)]
    assert world.alive(leased)
    assert world.alive(added)
    assert [lease.id for lease in world.leases.list()] == ["pull"]

    world.leases.delete("pull")
    world.gc.collect()
    assert not world.alive(leased)
    assert not world.alive(added)


def test_flat_leases_keep_only_their_own(world: World) -> None:
    child = world.blob("child")
    parent = world.blob("parent", {"containerd.io/gc.ref.content.0": child})
    world.leases.create("flat", {"containerd.io/gc.flat": "true"})
    world.leases.add_resource("flat", Resource(parent, "content"))
    world.gc.collect()
    assert world.alive(parent)
    assert not world.alive(child)


def test_roots_by_label_and_ingests_untouched(world: World) -> None:
    root = world.blob("root", {"containerd.io/gc.root": "2026-01-01"})
    w = world.content.writer("in-flight")
    w.write(b"half")
    w.close()
    world.gc.collect()
    assert world.alive(root)
    assert world.content.status("in-flight").offset == 4


def test_other_namespaces_keep_their_own(world: World) -> None:
    data = "shared bytes"
    here = world.blob(data)
    with context.using(namespace="other"):
        put(world.content, data.encode(), labels={"containerd.io/gc.root": "x"})
    world.gc.collect()
    assert not world.alive(here)
    with context.using(namespace="other"):
        assert world.alive(digest_of(data.encode()))
