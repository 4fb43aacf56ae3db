"""The snapshots service as a real process: the contract over gRPC, Debian's ctr, unpack."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import context
from shared import mount as mounting
from shared.diff import Descriptor
from shared.errors import InvalidArgument
from shared.proxy.content import ContentProxy
from shared.proxy.diff import DiffProxy
from shared.proxy.snapshots import SnapshotterProxy
from shared.rpc.sync_client import channel
from shared.unpack import Layer, apply_layers
from tests.conformance.content import put
from tests.conformance.snapshots import SnapshotterConformance
from tests.harness import NatsServer, ServiceProcess, Suite, running_suite, short_tempdir
from tests.testimages import Images, containerd_tree, tree_listing, umoci_unpack


class TestOverlayThroughGateway(SnapshotterConformance):
    namespace = "conformance-overlay"

    @pytest.fixture
    def snapshotter(self, suite: Suite) -> Iterator[SnapshotterProxy]:
        ch = channel(suite.address)
        yield SnapshotterProxy(ch, "overlayfs")
        ch.close()


class TestNativeThroughGateway(SnapshotterConformance):
    namespace = "conformance-native"

    @pytest.fixture
    def snapshotter(self, suite: Suite) -> Iterator[SnapshotterProxy]:
        ch = channel(suite.address)
        yield SnapshotterProxy(ch, "native")
        ch.close()


def test_unknown_snapshotter_is_invalid_argument(suite: Suite) -> None:
    with context.using(namespace="default"):
        proxy = SnapshotterProxy(channel(suite.address), "no-such")
        with pytest.raises(InvalidArgument, match="snapshotter not loaded: no-such"):
            proxy.stat("x")
        with pytest.raises(InvalidArgument, match="snapshotter argument missing"):
            SnapshotterProxy(channel(suite.address), "").stat("x")


def _run_mount_command(printed: str, target: Path) -> None:
    """``ctr snapshots mounts`` prints a shell command; run it as a user would."""
    command = printed.strip()
    assert command.startswith("mount "), command
    subprocess.run(["sh", "-c", command], check=True)
    assert mounting.is_mountpoint(str(target))


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_ctr_snapshots_commands(suite: Suite, snapshotter: str, tmp_path: Path) -> None:
    ns = f"ctr-{snapshotter}"

    def ctr(*args: str) -> str:
        return suite.ctr("snapshots", "--snapshotter", snapshotter, *args, namespace=ns).stdout

    target = tmp_path / "target"
    target.mkdir()
    ctr("prepare", "base-key")
    _run_mount_command(ctr("mounts", str(target), "base-key"), target)
    try:
        (target / "hello").write_text("from ctr\n")
    finally:
        mounting.unmount_all(str(target))
    ctr("commit", "base", "base-key")
    ctr("prepare", "child-key", "base")
    ctr("view", "a-view", "base")
    _run_mount_command(ctr("mounts", str(target), "a-view"), target)
    try:
        assert (target / "hello").read_text() == "from ctr\n"
    finally:
        mounting.unmount_all(str(target))

    rows = [line.split() for line in ctr("ls").splitlines()[1:]]
    assert sorted((r[0], r[-1]) for r in rows) == [
        ("a-view", "View"), ("base", "Committed"), ("child-key", "Active"),
    ]  # fmt: skip
    tree = ctr("tree")
    assert "base" in tree
    assert "\\_ child-key" in tree or "child-key" in tree
    usage = ctr("usage", "base")
    assert "base" in usage
    info = json.loads(ctr("info", "base"))
    assert info["Kind"] == "Committed"
    assert info["Name"] == "base"
    ctr("label", "base", "purpose=test")
    labels = json.loads(ctr("info", "base"))["Labels"]
    assert labels["purpose"] == "test"
    assert "containerd.io/gc.root" in labels  # ctr marks what it commits as a GC root
    failed = suite.ctr(
        "snapshots", "--snapshotter", snapshotter, "rm", "base", namespace=ns, check=False
    )
    assert failed.returncode != 0  # it still has children
    ctr("rm", "a-view", "child-key")
    ctr("rm", "base")
    assert ctr("ls").splitlines()[1:] == []


def _ingest(images: Images, ref: str, suite: Suite) -> list[Layer]:
    store = ContentProxy(channel(suite.address))
    layers = []
    for lay in images.layers(ref):
        data = lay.path.read_bytes()
        try:
            put(store, data)
        except Exception as e:  # already there from another test
            if type(e).__name__ != "AlreadyExists":
                raise
        layers.append(Layer(Descriptor(lay.media_type, lay.digest, lay.size), lay.diff_id))
    return layers


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
@pytest.mark.parametrize("ref", ["multilayer", "multilayer-zstd"])
def test_unpack_multilayer_matches_umoci_and_containerd(
    suite: Suite, testimages: Images, snapshotter: str, ref: str, tmp_path: Path
) -> None:
    with context.using(namespace=f"unpack-{snapshotter}"):
        layers = _ingest(testimages, ref, suite)
        ch = channel(suite.address)
        sn = SnapshotterProxy(ch, snapshotter)
        top = apply_layers(sn, DiffProxy(ch), layers)
        key = f"view-{ref}"
        sn.view(key, top)
        with mounting.temporary(sn.mounts(key), tmp_path) as root:
            ours = tree_listing(root)
        sn.remove(key)
    expected = tree_listing(umoci_unpack(testimages, "multilayer", tmp_path / "umoci"))
    # umoci unpacks a copy (hardlink counts: its own); containerd's listing came from overlayfs.
    assert (
        ours.replace("  [hardlink of", "[hl").splitlines()
        == expected.replace("  [hardlink of", "[hl").splitlines()
    )
    assert ours == containerd_tree()


def test_second_unpack_applies_nothing(suite: Suite, testimages: Images) -> None:
    with context.using(namespace="unpack-twice"):
        layers = _ingest(testimages, "multilayer", suite)
        ch = channel(suite.address)
        sn = SnapshotterProxy(ch, "overlayfs")
        top = apply_layers(sn, DiffProxy(ch), layers)

        class NoApply:
            def apply(self, desc: Descriptor, mounts: object) -> Descriptor:
                raise AssertionError("a layer was applied again")

        assert apply_layers(sn, NoApply(), layers) == top


def test_diff_then_apply_round_trip(suite: Suite, tmp_path: Path) -> None:
    with context.using(namespace="diff-round-trip"):
        ch = channel(suite.address)
        sn = SnapshotterProxy(ch, "overlayfs")
        differ = DiffProxy(ch)
        sn.prepare("rt-base-key")
        with mounting.temporary(sn.mounts("rt-base-key"), tmp_path) as root:
            (root / "keep").write_text("k")
            (root / "gone").write_text("g")
            (root / "dir").mkdir()
            (root / "dir" / "inner").write_text("i")
        sn.commit("rt-base", "rt-base-key")
        sn.prepare("rt-change", "rt-base")
        with mounting.temporary(sn.mounts("rt-change"), tmp_path) as root:
            (root / "gone").unlink()
            (root / "added").write_text("a")
            (root / "keep").write_text("changed")
        sn.view("rt-base-view", "rt-base")
        layer = differ.diff(sn.mounts("rt-base-view"), sn.mounts("rt-change"))
        assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
        info = ContentProxy(ch).info(layer.digest)
        assert info.labels["containerd.io/uncompressed"].startswith("sha256:")
        # Apply the computed layer on the base again: the same tree comes out.
        sn.prepare("rt-replay", "rt-base")
        applied = differ.apply(layer, sn.mounts("rt-replay"))
        assert applied.digest == info.labels["containerd.io/uncompressed"]
        with mounting.temporary(sn.mounts("rt-replay"), tmp_path) as root:
            assert sorted(p.name for p in root.iterdir()) == ["added", "dir", "keep"]
            assert (root / "keep").read_text() == "changed"


@pytest.fixture
def btrfs_suite(nats: NatsServer) -> Iterator[Suite]:
    """A suite whose btrfs snapshotter lives on a loop-mounted btrfs image."""
    base = short_tempdir("berth-btrfs-")
    image = base / "btrfs.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True)
    mnt = base / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    config = base / "berth.toml"
    config.write_text(
        f'[plugins."io.containerd.snapshotter.v1.btrfs"]\nroot_path = "{mnt / "btrfs"}"\n'
    )
    try:
        with running_suite(extra_args=["--config", str(config)]) as s:
            yield s
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        shutil.rmtree(base, ignore_errors=True)


def test_btrfs_through_ctr(btrfs_suite: Suite, tmp_path: Path) -> None:
    plugins = btrfs_suite.ctr("plugins", "ls", "type==io.containerd.snapshotter.v1").stdout
    row = next(line for line in plugins.splitlines() if " btrfs " in line)
    assert row.split()[-1] == "ok", plugins

    def ctr(*args: str) -> str:
        return btrfs_suite.ctr("snapshots", "--snapshotter", "btrfs", *args).stdout

    target = tmp_path / "t"
    target.mkdir()
    ctr("prepare", "b-key")
    _run_mount_command(ctr("mounts", str(target), "b-key"), target)
    try:
        (target / "f").write_text("on btrfs")
    finally:
        mounting.unmount_all(str(target))
    ctr("commit", "b", "b-key")
    ctr("view", "b-view", "b")
    _run_mount_command(ctr("mounts", str(target), "b-view"), target)
    try:
        assert (target / "f").read_text() == "on btrfs"
    finally:
        mounting.unmount_all(str(target))
    ctr("rm", "b-view")
    ctr("rm", "b")


def test_btrfs_is_skipped_elsewhere(suite: Suite) -> None:
    plugins = suite.ctr("plugins", "ls", "id==btrfs").stdout
    assert plugins.splitlines()[1].split()[-1] == "skip", plugins


def test_proxy_plugin_snapshotter(nats: NatsServer) -> None:
    """A second snapshots service serves as a [proxy_plugins] snapshotter of the first."""
    base = short_tempdir("berth-proxy-")
    try:
        external_config = base / "external.toml"
        external_config.write_text(
            f'root = "{base / "ext-root"}"\nstate = "{base / "ext-state"}"\n'
            f'[database]\nurl = "sqlite:///{base / "ext.db"}"\n[events]\nnats_url = "{nats.url}"\n'
            # containerd's proxy client names the plugin by its key in our config.
            '[plugins."io.containerd.snapshotter.v1.overlayfs"]\naliases = ["outside"]\n'
        )
        external = ServiceProcess("snapshots", external_config, str(base / "ext.sock"),
                                  base / "ext.log").start()  # fmt: skip
        try:
            config = base / "berth.toml"
            config.write_text(
                f'[proxy_plugins.outside]\ntype = "snapshot"\naddress = "{base / "ext.sock"}"\n'
            )
            with running_suite(extra_args=["--config", str(config)]) as suite:
                plugins = suite.ctr("plugins", "ls", "id==outside").stdout
                assert "io.containerd.snapshotter.v1" in plugins
                assert plugins.splitlines()[1].split()[-1] == "ok"
                suite.ctr("snapshots", "--snapshotter", "outside", "prepare", "via-proxy")
                mounts = suite.ctr("snapshots", "--snapshotter", "outside", "mounts", "/mnt",
                                   "via-proxy").stdout  # fmt: skip
                assert str(base / "ext-root") in mounts  # the external service's directories
                rows = suite.ctr("snapshots", "--snapshotter", "outside", "ls").stdout
                assert "via-proxy" in rows
                # The external service holds it under a key that names namespace and record.
                with context.using(namespace="default"):
                    remote = SnapshotterProxy(channel(external.listen), "overlayfs")
                    ext_keys = [i.name for i in remote.walk()]
                assert len(ext_keys) == 1
                assert ext_keys[0].startswith("default/")
                assert ext_keys[0].endswith("/via-proxy")
                suite.ctr("snapshots", "--snapshotter", "outside", "rm", "via-proxy")
        finally:
            external.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("case_name", ["dotdot-traversal", "hardlink-dotdot", "symlink-escape-relative",
                                       "truncated-gzip", "huge-size-truncated"])  # fmt: skip
def test_hostile_layers_through_the_service(suite: Suite, case_name: str, tmp_path: Path) -> None:
    """Diff.Apply of a malicious layer: refused or contained, and nothing outside changes."""
    from tests.layers.corpus import CASES

    case = next(c for c in CASES if c.name == case_name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    blob = case.build(outside)
    with context.using(namespace="hostile"):
        ch = channel(suite.address)
        store = ContentProxy(ch)
        put(store, blob)
        sn = SnapshotterProxy(ch, "overlayfs")
        sn.prepare(f"hostile-{case_name}")
        desc = Descriptor(
            case.media_type, f"sha256:{__import__('hashlib').sha256(blob).hexdigest()}", len(blob)
        )
        if case.expect == "refused":
            with pytest.raises(InvalidArgument):
                DiffProxy(ch).apply(desc, sn.mounts(f"hostile-{case_name}"))
        else:
            DiffProxy(ch).apply(desc, sn.mounts(f"hostile-{case_name}"))
        sn.remove(f"hostile-{case_name}")
    assert sorted(p.name for p in outside.iterdir()) == ["sentinel"]
    assert (outside / "sentinel").read_text() == "untouched"
