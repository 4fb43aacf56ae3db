"""Applying layers (services.snapshots.archive): entry types, whiteouts, compression, hostile input."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from services.snapshots.archive import ApplyResult, UnsafeLayer, Whiteouts, apply_layer
from services.snapshots.compression import Compression, decompressor_for
from shared.errors import InvalidArgument, Unimplemented
from tests.layers import trees
from tests.layers.corpus import BOMB, CASES, TAR, TAR_GZIP, TAR_ZSTD, Case, Layer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mknod, trusted xattrs"),
]

T0 = 1_600_000_000


def chunked(blob: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(blob), size):
        yield blob[i : i + size]


def apply(root: Path, blob: bytes, mode: Whiteouts = Whiteouts.DELETE, **kw) -> ApplyResult:
    root.mkdir(parents=True, exist_ok=True)
    return apply_layer(chunked(blob), kw.pop("media_type", TAR), root, mode, **kw)


# -- entry types and metadata


def test_every_entry_type_with_owners_modes_and_times(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ti = tarfile.TarInfo("d/x")
    ti.pax_headers = {
        "SCHILY.xattr.user.colour": "blue",
        "SCHILY.xattr.trusted.overlay.opaque": "y",  # never taken from a layer
        "atime": str(T0 + 500),
    }
    ti.mtime, ti.uid, ti.gid = T0 + 10, 7, 8
    layer = (
        Layer()
        .dir("./", 0o700)  # the root entry is ignored, as containerd does
        .dir("d/", 0o2775, uid=1000, gid=1001, mtime=T0)
        .file("d/suid", b"#!/bin/true\n", 0o4755, uid=1000, gid=1001, mtime=T0 + 1)
        .file("d/sgid", b"", 0o2711, uid=0, gid=50, mtime=T0 + 2)
        .dir("sticky/", 0o1777, mtime=T0 + 3)
        .symlink("d/link", "suid")
        .hardlink("d/hard", "d/suid", 0o4755, uid=1000, gid=1001, mtime=T0 + 1)
        .device("dev/null", tarfile.CHRTYPE, 1, 3)
        .device("dev/loop0", tarfile.BLKTYPE, 7, 0)
        .device("fifo", tarfile.FIFOTYPE)
        .add(ti, b"xattr'd")
        .bytes()
    )
    result = apply(root, layer)
    assert result.diff_id == "sha256:" + hashlib.sha256(layer).hexdigest()
    assert result.size == len(layer)
    assert result.entries == 11

    assert stat.S_IMODE(root.stat().st_mode) != 0o700
    suid = os.lstat(root / "d/suid")
    assert stat.S_IMODE(suid.st_mode) == 0o4755  # chmod after chown kept the setuid bit
    assert (suid.st_uid, suid.st_gid, suid.st_nlink) == (1000, 1001, 2)
    assert suid.st_mtime_ns == (T0 + 1) * 10**9
    assert (root / "d/suid").read_bytes() == b"#!/bin/true\n"
    assert stat.S_IMODE(os.lstat(root / "d/sgid").st_mode) == 0o2711
    assert os.lstat(root / "d/sgid").st_gid == 50
    d = os.lstat(root / "d")
    assert stat.S_IMODE(d.st_mode) == 0o2775 and (d.st_uid, d.st_gid) == (1000, 1001)
    assert d.st_mtime_ns == T0 * 10**9  # set after its children were written
    assert stat.S_IMODE(os.lstat(root / "sticky").st_mode) == 0o1777
    assert os.readlink(root / "d/link") == "suid"
    assert os.lstat(root / "d/hard").st_ino == suid.st_ino
    null = os.lstat(root / "dev/null")
    assert (
        stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    )
    loop = os.lstat(root / "dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and os.major(loop.st_rdev) == 7
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(root / "dev").st_mode) == 0o755  # implicit parent
    x = root / "d/x"
    assert os.getxattr(x, "user.colour") == b"blue"
    assert "trusted.overlay.opaque" not in os.listxattr(x)
    assert (os.lstat(x).st_uid, os.lstat(x).st_gid) == (7, 8)
    assert os.lstat(x).st_atime_ns == (T0 + 500) * 10**9


def test_long_names_and_link_targets_pax_and_gnu(tmp_path: Path) -> None:
    deep = "/".join(f"{c * 100}" for c in "abcde")  # 504 bytes, components of 100
    target = "../" * 4 + "t" * 300
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            f = tarfile.TarInfo(deep + "/file")
            f.size = 3
            tf.addfile(f, io.BytesIO(b"abc"))
            s = tarfile.TarInfo(deep + "/sym")
            s.type, s.linkname = tarfile.SYMTYPE, target
            tf.addfile(s)
            h = tarfile.TarInfo("hard")
            h.type, h.linkname = tarfile.LNKTYPE, deep + "/file"
            tf.addfile(h)
        root = tmp_path / str(fmt)
        apply(root, buf.getvalue())
        assert (root / deep / "file").read_bytes() == b"abc"
        assert os.readlink(root / deep / "sym") == target
        assert (root / "hard").stat().st_ino == (root / deep / "file").stat().st_ino


def test_replacements_file_to_dir_and_dir_to_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(
        root, Layer().file("f2d").dir("d2f/").file("d2f/child").dir("keep/").file("keep/a").bytes()
    )
    apply(
        root,
        Layer()
        .dir("f2d/", 0o711)
        .file("f2d/new")
        .file("d2f", b"now a file")
        .dir("keep/", 0o700)  # a directory over a directory keeps its content
        .file("same", b"1")
        .file("same", b"22")  # later entries of a layer replace earlier ones
        .dir("same/")
        .file("same/x")
        .bytes(),
    )
    assert stat.S_IMODE((root / "f2d").stat().st_mode) == 0o711
    assert (root / "f2d/new").is_file()
    assert (root / "d2f").read_bytes() == b"now a file"
    assert (root / "keep/a").is_file() and stat.S_IMODE((root / "keep").stat().st_mode) == 0o700
    assert (root / "same/x").is_file()


def test_symlinked_parent_resolves_inside_the_root(tmp_path: Path) -> None:
    # merged-/usr images: lib -> usr/lib in one layer, lib/foo in the next (containerd's RootPath)
    root = tmp_path / "root"
    apply(root, Layer().dir("usr/").dir("usr/lib/").symlink("lib", "/usr/lib").bytes())
    apply(
        root, Layer().file("lib/libfoo.so", b"elf").symlink("bin", "usr/bin").file("bin/sh").bytes()
    )
    assert (root / "usr/lib/libfoo.so").read_bytes() == b"elf"
    assert (root / "lib").is_symlink()
    assert (root / "usr/bin/sh").is_file()  # the missing target was created, as containerd does


# -- whiteouts


def _lower_layer() -> bytes:
    return (
        Layer()
        .dir("a/", 0o750, uid=7, gid=7, mtime=T0)
        .file("a/keep")
        .file("a/gone")
        .dir("b/")
        .dir("b/x/")
        .file("b/x/y")
        .dir("c/")
        .file("c/old1")
        .file("c/old2")
        .dir("c/keepdir/")
        .file("c/keepdir/z")
        .file("f2d")
        .dir("d2f/")
        .file("d2f/child")
        .bytes()
    )


def _upper_layer() -> bytes:
    return (
        Layer()
        .file("a/.wh.gone", b"")  # no entry for a/: an implicit parent in an overlay upperdir
        .file(".wh.b", b"")
        .dir("c/")
        .file("c/new1")
        .file("c/.wh..wh..opq", b"")
        .file("c/new2")
        .dir("f2d/")
        .file("f2d/child")
        .file("d2f", b"file")
        .file("a/mine")
        .file("a/.wh.mine", b"")  # a whiteout never hides its own layer (OCI)
        .file(".wh.never-existed", b"")
        .bytes()
    )


def _expect_upper_applied(root: Path) -> None:
    assert sorted(os.listdir(root)) == ["a", "c", "d2f", "f2d"]
    assert sorted(os.listdir(root / "a")) == ["keep", "mine"]
    assert sorted(os.listdir(root / "c")) == ["new1", "new2"]
    assert (root / "f2d/child").is_file()
    assert (root / "d2f").read_bytes() == b"file"


def test_whiteouts_delete(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root, _lower_layer())
    apply(root, _upper_layer())
    _expect_upper_applied(root)


def test_whiteouts_overlay_with_a_real_mount(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    apply(lower, _lower_layer())
    apply(upper, _upper_layer(), Whiteouts.OVERLAY, parents=[lower])
    for name in ("a/gone", "b", "never-existed"):
        st = os.lstat(upper / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert os.getxattr(upper / "c", "trusted.overlay.opaque") == b"y"
    a = os.lstat(upper / "a")  # implicit parent took lower's metadata (WithParents)
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid) == (0o750, 7, 7)
    assert not (upper / "a/keep").exists()

    with trees.overlay([lower], upper, tmp_path / "work", tmp_path / "merged") as merged:
        _expect_upper_applied(merged)
        view = trees.snapshot(merged)
    copy = tmp_path / "copy"
    apply(copy, _lower_layer())
    apply(copy, _upper_layer())
    assert trees.snapshot(copy) == view


def test_implicit_parent_without_parents_is_0755(tmp_path: Path) -> None:
    root = tmp_path / "upper"
    apply(root, Layer().file("x/y/z").bytes(), Whiteouts.OVERLAY)
    assert stat.S_IMODE((root / "x/y").stat().st_mode) == 0o755


def test_opaque_and_whiteout_keep_what_this_layer_wrote(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root, Layer().dir("o/").dir("o/sub/").file("o/sub/old").file("o/old").bytes())
    apply(root, Layer().dir("w/").file("w/old").bytes())
    # o/sub/new comes before the marker, without an entry for o/sub: o/sub stays, emptied
    apply(root, Layer().file("o/sub/new").file("o/.wh..wh..opq", b"").bytes())
    assert sorted(p.name for p in (root / "o").rglob("*")) == ["new", "sub"]
    # a whiteout of a directory this layer wrote into leaves only this layer's content
    apply(root, Layer().file("w/new").file(".wh.w", b"").bytes())
    assert os.listdir(root / "w") == ["new"]


def test_entries_in_any_order(tmp_path: Path) -> None:
    # children before their directory entry, and files spread over 600 directories
    # round-robin, so the directory cache (256 entries) is evicted and refilled
    layer = Layer().file("a/b/c", b"c").dir("a/b/", 0o700, uid=3, mtime=T0).dir("a/", 0o711)
    for i in range(3):
        for d in range(600):
            layer.file(f"many/d{d}/f{i}", b"%d" % d)
    layer.hardlink("many/link", "many/d7/f0")
    root = tmp_path / "root"
    apply(root, layer.bytes())
    b = os.lstat(root / "a/b")
    assert (stat.S_IMODE(b.st_mode), b.st_uid, b.st_mtime_ns) == (0o700, 3, T0 * 10**9)
    assert (root / "a/b/c").read_bytes() == b"c"
    assert stat.S_IMODE(os.lstat(root / "a").st_mode) == 0o711
    assert sum(len(f) for _, _, f in os.walk(root / "many")) == 1801
    assert (root / "many/d599/f2").read_bytes() == b"599"
    assert (root / "many/link").stat().st_ino == (root / "many/d7/f0").stat().st_ino


# -- compression


def _sample_tar() -> bytes:
    layer = Layer().dir("data/")
    for i in range(40):
        layer.file(f"data/{i}", (f"line {i}\n" * 3000).encode())
    return layer.bytes()


def test_compressions_give_the_same_diff_id(tmp_path: Path) -> None:
    tar = _sample_tar()
    third = len(tar) // 3
    members = b"".join(
        gzip.compress(p) for p in (tar[:third], tar[third : 2 * third], tar[2 * third :])
    )
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    variants = {
        "plain": (tar, TAR),
        "gzip": (gzip.compress(tar), TAR_GZIP),
        "gzip-members": (members, TAR_GZIP),
        "zstd": (zstandard.ZstdCompressor().compress(tar), TAR_ZSTD),
        "zstd-skippable": (skippable + zstandard.ZstdCompressor().compress(tar), TAR_ZSTD),
        "gzip-type-plain-data": (tar, TAR_GZIP),
        "gzip-type-zstd-data": (zstandard.ZstdCompressor().compress(tar), TAR_GZIP),
        "docker": (tar, "application/vnd.docker.image.rootfs.diff.tar"),
        "docker-gzip": (gzip.compress(tar), "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "nondistributable": (
            gzip.compress(tar),
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ),
    }
    expected = "sha256:" + hashlib.sha256(tar).hexdigest()
    for name, (blob, media_type) in variants.items():
        root = tmp_path / name
        root.mkdir()
        result = apply_layer(chunked(blob, 4097), media_type, root, Whiteouts.DELETE)
        assert (result.diff_id, result.size) == (expected, len(tar)), name
        assert len(list((root / "data").iterdir())) == 40
    # a binary file object works too
    root = tmp_path / "fileobj"
    root.mkdir()
    assert (
        apply_layer(io.BytesIO(gzip.compress(tar)), TAR_GZIP, root, Whiteouts.DELETE).diff_id
        == expected
    )


def test_media_types() -> None:
    assert decompressor_for(TAR) is Compression.NONE
    assert decompressor_for(TAR_GZIP) is Compression.DETECT
    for bad in ("application/vnd.oci.image.layer.v1.tar+foo", "application/octet-stream", ""):
        with pytest.raises(Unimplemented, match="unsupported layer media type"):
            decompressor_for(bad)


def test_trailing_bytes_count_in_the_diff_id(tmp_path: Path) -> None:
    blob = _sample_tar() + b"\0" * 10240 + b"trailing"
    (tmp_path / "r").mkdir()
    result = apply_layer([blob], TAR, tmp_path / "r", Whiteouts.DELETE)
    assert result.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()


def test_gzip_with_trailing_garbage_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    with pytest.raises(InvalidArgument, match="trailing data after gzip"):
        apply_layer(
            [gzip.compress(_sample_tar()) + b"junk"], TAR_GZIP, tmp_path / "r", Whiteouts.DELETE
        )


def test_empty_blob_is_an_empty_layer(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    result = apply_layer([], TAR_GZIP, tmp_path / "r", Whiteouts.DELETE)
    assert (result.size, result.entries) == (0, 0)


# -- the malicious corpus


def _prepare(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "sentinel").write_bytes(b"precious")
    (outside / "sub").mkdir()
    (outside / "sub" / "keep").write_bytes(b"also precious")
    return root, outside


def _beside_root(tmp_path: Path) -> dict[str, dict[str, object]]:
    return trees.snapshot(tmp_path, exclude=("root",), nlink=True)


@pytest.mark.parametrize("mode", list(Whiteouts), ids=lambda m: m.value)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_malicious_layer(tmp_path: Path, case: Case, mode: Whiteouts) -> None:
    root, outside = _prepare(tmp_path)
    blob = case.build(outside)
    before = _beside_root(tmp_path)
    fds = len(os.listdir("/proc/self/fd"))
    try:
        apply_layer(chunked(blob), case.media_type, root, mode)
    except InvalidArgument as e:
        outcome = "refused"
        error: Exception | None = e
    else:
        outcome, error = "contained", None
    assert outcome == case.expect, error
    assert len(os.listdir("/proc/self/fd")) == fds  # nothing leaked, failure or not
    assert _beside_root(tmp_path) == before
    assert (outside / "sentinel").read_bytes() == b"precious"
    for rel in case.inside(outside):
        assert os.path.lexists(root / rel), rel
    for target in ("pwned", "null", "evil"):
        assert not (outside / target).exists() and not (tmp_path / target).exists()


def test_unsafe_layer_names_the_entry(tmp_path: Path) -> None:
    root, _ = _prepare(tmp_path)
    with pytest.raises(UnsafeLayer) as info:
        apply_layer([Layer().file("../outside/pwned").bytes()], TAR, root, Whiteouts.DELETE)
    assert info.value.entry == "../outside/pwned"
    assert "escapes the root" in info.value.reason


@pytest.mark.parametrize("name", ["huge-size-truncated", "huge-size-base256", "huge-pax-header"])
def test_absurd_sizes_do_not_allocate(tmp_path: Path, name: str) -> None:
    root, outside = _prepare(tmp_path)
    blob = next(c for c in CASES if c.name == name).build(outside)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument):
            apply_layer(chunked(blob), TAR, root, Whiteouts.DELETE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_truncation_messages(tmp_path: Path) -> None:
    root, outside = _prepare(tmp_path)
    for name, what in (
        ("truncated-gzip", "truncated gzip stream"),
        ("truncated-zstd", "truncated zstd stream"),
    ):
        case = next(c for c in CASES if c.name == name)
        with pytest.raises(InvalidArgument, match=what):
            apply_layer(chunked(case.build(outside)), case.media_type, root, Whiteouts.DELETE)


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory on tmpfs when there is one: 100,000 files are a disk benchmark."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="berth-bomb-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_tar_bomb_is_contained(fast_tmp: Path) -> None:
    root, outside = _prepare(fast_tmp)
    blob = BOMB.build(outside)
    before = _beside_root(fast_tmp)
    result = apply_layer(chunked(blob, 1 << 20), TAR, root, Whiteouts.DELETE)
    assert result.entries == 100_100
    assert sum(len(files) for _, _, files in os.walk(root)) == 100_000
    assert _beside_root(fast_tmp) == before
