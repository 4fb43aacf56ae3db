"""The snapshotter contract on each backend, with records in SQLite (and PostgreSQL)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.snapshots.backends.btrfs import BtrfsBackend
from services.snapshots.backends.native import NativeBackend
from services.snapshots.backends.overlay import OverlayBackend
from services.snapshots.snapshotter import Snapshotter
from services.snapshots.storage import SnapshotStorage
from shared import context
from shared.db import Database, migrate
from shared.errors import NotFound
from tests.conformance.snapshots import SnapshotterConformance, layer, listing


def _snapshotter(name: str, backend: object, url: str) -> Iterator[Snapshotter]:
    db = Database(url)
    migrate(db.engine)
    try:
        yield Snapshotter(name, SnapshotStorage(db, "test-node", name), backend)  # type: ignore[arg-type]
    finally:
        db.dispose()


class TestOverlay(SnapshotterConformance):
    @pytest.fixture
    def snapshotter(self, tmp_path: Path) -> Iterator[Snapshotter]:
        yield from _snapshotter("overlayfs", OverlayBackend(tmp_path / "overlayfs"),
                                f"sqlite:///{tmp_path / 'berth.db'}")  # fmt: skip


class TestNative(SnapshotterConformance):
    @pytest.fixture
    def snapshotter(self, tmp_path: Path) -> Iterator[Snapshotter]:
        yield from _snapshotter("native", NativeBackend(tmp_path / "native"),
                                f"sqlite:///{tmp_path / 'berth.db'}")  # fmt: skip


@pytest.mark.postgres
class TestOverlayPostgres(SnapshotterConformance):
    @pytest.fixture
    def snapshotter(self, tmp_path: Path, postgres_url: str) -> Iterator[Snapshotter]:
        yield from _snapshotter("overlayfs", OverlayBackend(tmp_path / "overlayfs"), postgres_url)


@pytest.fixture
def btrfs_root(tmp_path: Path) -> Iterator[Path]:
    """A btrfs filesystem in a loop-mounted image file."""
    image = tmp_path / "btrfs.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True)
    mountpoint = tmp_path / "btrfs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


class TestBtrfs(SnapshotterConformance):
    @pytest.fixture
    def snapshotter(self, tmp_path: Path, btrfs_root: Path) -> Iterator[Snapshotter]:
        yield from _snapshotter("btrfs", BtrfsBackend(btrfs_root / "snapshots"),
                                f"sqlite:///{tmp_path / 'berth.db'}")  # fmt: skip


def test_btrfs_refuses_other_filesystems(tmp_path: Path) -> None:
    from shared.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="not btrfs"):
        BtrfsBackend(tmp_path / "not-btrfs")


def test_namespaces_do_not_see_each_other(tmp_path: Path) -> None:
    scratch = tmp_path / "mounts"
    for sn in _snapshotter(
        "overlayfs", OverlayBackend(tmp_path / "o"), f"sqlite:///{tmp_path}/b.db"
    ):
        with context.using(namespace="a"):
            layer(sn, scratch, "same-name", "", {"from": b"a"})
        with context.using(namespace="b"):
            with pytest.raises(NotFound):
                sn.stat("same-name")
            layer(sn, scratch, "same-name", "", {"from": b"b"})
            sn.view("v", "same-name")
            assert listing(sn, "v", scratch) == {"from": b"b"}
            assert [i.name for i in sn.walk()] == ["same-name", "v"]


def test_cleanup_removes_leftovers(tmp_path: Path) -> None:
    backend = OverlayBackend(tmp_path / "o")
    for sn in _snapshotter("overlayfs", backend, f"sqlite:///{tmp_path}/b.db"):
        with context.using(namespace="default"):
            sn.prepare("kept")
            (backend.dirs.snapshots / "new-crashed").mkdir()
            (backend.dirs.snapshots / "999").mkdir()
            sn.cleanup()
            left = sorted(p.name for p in backend.dirs.snapshots.iterdir())
            assert left == [str(sn.storage.get("default", "kept").id)]
