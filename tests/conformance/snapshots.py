"""One behaviour for every snapshotter: overlayfs, native, btrfs, over gRPC, as a proxy plugin.

Subclass :class:`SnapshotterConformance` in a ``Test*`` class and provide the
``snapshotter`` fixture (and ``scratch``, a directory for temporary mounts).
Tests mount what the snapshotter returns, as a real caller does, and unmount
it again, whatever happens.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import context
from shared import mount as mounting
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from shared.snapshots import Info, Kind, Snapshotter

NAMESPACE = "conformance"


def write_files(sn: Snapshotter, key: str, scratch: Path, files: dict[str, bytes]) -> None:
    with mounting.temporary(sn.mounts(key), scratch) as root:
        for name, data in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def listing(sn: Snapshotter, key: str, scratch: Path) -> dict[str, bytes]:
    with mounting.temporary(sn.mounts(key), scratch) as root:
        found = {}
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath) / name
                found[str(path.relative_to(root))] = path.read_bytes()
        return found


def layer(sn: Snapshotter, scratch: Path, name: str, parent: str, files: dict[str, bytes]) -> str:
    """Prepare, write, commit: one layer named ``name``."""
    key = f"extract-{name}"
    sn.prepare(key, parent)
    write_files(sn, key, scratch, files)
    sn.commit(name, key)
    return name


class SnapshotterConformance:
    namespace = NAMESPACE

    @pytest.fixture
    def snapshotter(self) -> Snapshotter:
        raise NotImplementedError

    @pytest.fixture
    def scratch(self, tmp_path: Path) -> Path:
        return tmp_path / "mounts"

    @pytest.fixture(autouse=True)
    def _namespace(self) -> Iterator[None]:
        with context.using(namespace=self.namespace):
            yield

    def test_layers_stack(self, snapshotter: Snapshotter, scratch: Path) -> None:
        sn = snapshotter
        base = layer(sn, scratch, "base", "", {"a": b"1", "dir/b": b"2"})
        mid = layer(sn, scratch, "mid", base, {"c": b"3", "a": b"changed"})
        sn.prepare("container", mid)
        assert listing(sn, "container", scratch) == {"a": b"changed", "dir/b": b"2", "c": b"3"}
        write_files(sn, "container", scratch, {"new": b"4"})
        # The parents did not change.
        sn.view("look-at-base", base)
        assert listing(sn, "look-at-base", scratch) == {"a": b"1", "dir/b": b"2"}
        info = sn.stat("container")
        assert (info.kind, info.parent) == (Kind.ACTIVE, "mid")
        assert sn.stat("mid").kind == Kind.COMMITTED
        assert sn.stat("mid").parent == "base"
        assert sn.stat("look-at-base").kind == Kind.VIEW
        for key in ("container", "look-at-base", "mid", "base"):
            sn.remove(key)

    def test_deletions_in_a_layer(self, snapshotter: Snapshotter, scratch: Path) -> None:
        sn = snapshotter
        base = layer(sn, scratch, "del-base", "", {"keep": b"k", "gone": b"g", "d/x": b"x"})
        sn.prepare("del-upper", base)
        with mounting.temporary(sn.mounts("del-upper"), scratch) as root:
            (root / "gone").unlink()
            (root / "d" / "x").unlink()
            (root / "d").rmdir()
        sn.commit("del-top", "del-upper")
        sn.view("del-view", "del-top")
        assert listing(sn, "del-view", scratch) == {"keep": b"k"}
        for key in ("del-view", "del-top", "del-base"):
            sn.remove(key)

    def test_errors_as_containerd(self, snapshotter: Snapshotter, scratch: Path) -> None:
        sn = snapshotter
        with pytest.raises(NotFound):
            sn.stat("nothing")
        with pytest.raises(NotFound):
            sn.prepare("child-of-nothing", "nothing")
        base = layer(sn, scratch, "err-base", "", {"f": b"x"})
        sn.prepare("err-active", base)
        with pytest.raises(AlreadyExists):
            sn.prepare("err-active", base)
        with pytest.raises(InvalidArgument):
            sn.prepare("child-of-active", "err-active")  # parents must be committed
        with pytest.raises(FailedPrecondition):
            sn.remove(base)  # it has a child
        with pytest.raises(NotFound):
            sn.mounts(base)  # committed snapshots are not mounted directly
        sn.view("err-view", base)
        with pytest.raises(FailedPrecondition):
            sn.commit("from-a-view", "err-view")
        with pytest.raises(AlreadyExists):
            sn.commit(base, "err-active")
        with pytest.raises(InvalidArgument):
            sn.prepare("", base)
        for key in ("err-view", "err-active", base):
            sn.remove(key)
        with pytest.raises(NotFound):
            sn.remove(base)

    def test_walk_update_usage(self, snapshotter: Snapshotter, scratch: Path) -> None:
        sn = snapshotter
        base = layer(sn, scratch, "walk-base", "", {"big": b"x" * (1 << 20)})
        sn.prepare("walk-active", base, {"purpose": "test"})
        kinds = {i.name: i.kind for i in sn.walk()}
        assert kinds["walk-base"] == Kind.COMMITTED
        assert kinds["walk-active"] == Kind.ACTIVE
        assert [i.name for i in sn.walk(["kind==active,labels.purpose==test"])] == ["walk-active"]
        assert [i.name for i in sn.walk([f"parent=={base}"])] == ["walk-active"]
        updated = sn.update(
            Info("walk-active", "", Kind.UNKNOWN, 0, 0, {"extra": "1"}), ["labels.extra"]
        )
        assert updated.labels == {"purpose": "test", "extra": "1"}
        assert sn.usage(base).size >= 1 << 20
        assert sn.usage(base).inodes >= 1
        with pytest.raises(InvalidArgument):
            list(sn.walk(["kind=="]))
        sn.remove("walk-active")
        sn.remove(base)

    def test_deep_chain(self, snapshotter: Snapshotter, scratch: Path) -> None:
        """130 layers: overlay options outgrow a page and must still mount."""
        sn = snapshotter
        parent = ""
        names = []
        for i in range(130):
            key = f"deep-{i}"
            sn.prepare(f"x-{key}", parent)
            if i % 10 == 0:
                write_files(sn, f"x-{key}", scratch, {f"f{i}": str(i).encode()})
            sn.commit(key, f"x-{key}")
            names.append(key)
            parent = key
        sn.prepare("deep-top", parent)
        files = listing(sn, "deep-top", scratch)
        assert files == {f"f{i}": str(i).encode() for i in range(0, 130, 10)}
        sn.remove("deep-top")
        for key in reversed(names):
            sn.remove(key)

    def test_cleanup_keeps_snapshots(self, snapshotter: Snapshotter, scratch: Path) -> None:
        sn = snapshotter
        base = layer(sn, scratch, "clean-base", "", {"f": b"kept"})
        sn.cleanup()
        sn.view("clean-view", base)
        assert listing(sn, "clean-view", scratch) == {"f": b"kept"}
        sn.remove("clean-view")
        sn.remove(base)
