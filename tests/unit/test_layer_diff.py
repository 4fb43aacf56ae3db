"""Computing layers (services.snapshots.layerdiff): apply(diff(lower, upper)) onto lower == upper."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import socket
import stat
import tarfile
from pathlib import Path

import pytest

from services.snapshots.archive import Whiteouts, apply_layer
from services.snapshots.layerdiff import CompressedDigestWriter, write_diff
from shared.errors import Unimplemented
from tests.layers import trees
from tests.layers.corpus import TAR, TAR_GZIP, Layer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mknod, trusted xattrs"),
]

T0 = 1_600_000_000


def _base() -> bytes:
    return (
        Layer()
        .dir("etc/", mtime=T0)
        .file("etc/hosts", b"127.0.0.1 localhost\n", mtime=T0)
        .file("etc/same-size", b"aaaa", mtime=T0)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, mtime=T0)
        .file("etc/chmod-me", b"x", 0o644, mtime=T0)
        .file("etc/chown-me", b"x", 0o644, mtime=T0)
        .file("etc/xattr-me", b"x", mtime=T0)
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .dir("usr/", mtime=T0)
        .dir("usr/bin/", mtime=T0)
        .file("usr/bin/tool", b"\x7fELF", 0o755, mtime=T0)
        .hardlink("usr/bin/tool-alias", "usr/bin/tool", 0o755, mtime=T0)
        .file("usr/bin/linked-later", b"shared", 0o755, mtime=T0)
        .dir("var/", mtime=T0)
        .dir("var/cache/", mtime=T0)
        .file("var/cache/a", mtime=T0)
        .dir("var/cache/sub/", mtime=T0)
        .file("var/cache/sub/b", mtime=T0)
        .dir("tmp/", 0o1777, mtime=T0)
        .file("tmp/old1", mtime=T0)
        .file("tmp/old2", mtime=T0)
        .file("file-to-dir", mtime=T0)
        .dir("dir-to-file/", mtime=T0)
        .file("dir-to-file/child", mtime=T0)
        .device("dev-null", tarfile.CHRTYPE, 1, 3)
        .bytes()
    )


def _mutate(root: Path) -> None:
    """What a container or a build step does to its rootfs."""
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.0.0.1 db\n")
    (root / "etc/same-size").write_bytes(b"bbbb")  # same size, new mtime with nanoseconds
    os.chmod(root / "etc/chmod-me", 0o4711)
    os.chown(root / "etc/chown-me", 1000, 1000)
    os.setxattr(root / "etc/xattr-me", "user.origin", b"build")
    os.unlink(root / "etc/localtime")
    os.symlink("/usr/share/zoneinfo/Europe/Paris", root / "etc/localtime")
    os.unlink(root / "etc/passwd")
    shutil.rmtree(root / "var/cache")
    for name in os.listdir(root / "tmp"):  # everything replaced: an opaque directory
        os.unlink(root / "tmp" / name)
    (root / "tmp/new").write_bytes(b"new")
    os.unlink(root / "file-to-dir")
    (root / "file-to-dir").mkdir()
    (root / "file-to-dir/inside").write_bytes(b"in")
    shutil.rmtree(root / "dir-to-file")
    (root / "dir-to-file").write_bytes(b"was a dir")
    (root / "opt/app").mkdir(parents=True)
    (root / "opt/app/run").write_bytes(b"#!/bin/sh\n")
    os.link(root / "opt/app/run", root / "opt/app/run2")
    os.link(root / "usr/bin/linked-later", root / "opt/app/shared")  # new name for an old file
    os.mknod(root / "opt/app/fifo", stat.S_IFIFO | 0o600)
    os.mknod(root / "opt/app/blk", stat.S_IFBLK | 0o600, os.makedev(7, 1))
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "opt/app/sock"))  # sockets are not layer content
    s.close()


def _diff(lower: Path | None, upper: Path, overlay: bool = False) -> bytes:
    out = io.BytesIO()
    n = write_diff(lower, upper, out, upper_is_overlay_upperdir=overlay)
    assert n == len(out.getvalue())
    return out.getvalue()


def _apply(root: Path, blob: bytes, mode: Whiteouts = Whiteouts.DELETE) -> None:
    root.mkdir(parents=True, exist_ok=True)
    apply_layer([blob], TAR, root, mode)


def _names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        return tf.getnames()


def _order(name: str) -> bytes:
    """Path order, an entry's whiteout standing where the entry would (containerd's)."""
    parent, _, base = name.rpartition("/")
    base = "" if base == ".wh..wh..opq" else base.removeprefix(".wh.")
    return f"{parent}/{base}".strip("/").encode().replace(b"/", b"\0")


def test_double_walk_round_trip(tmp_path: Path) -> None:
    lower, upper, copy = tmp_path / "lower", tmp_path / "upper", tmp_path / "copy"
    for root in (lower, upper, copy):
        _apply(root, _base())
    _mutate(upper)
    diff = _diff(lower, upper)
    _apply(copy, diff)
    assert trees.snapshot(copy) == trees.snapshot(upper)
    assert trees.link_groups(copy) == trees.link_groups(upper)

    names = _names(diff)
    assert "etc/.wh.passwd" in names and "var/.wh.cache" in names
    assert "tmp/.wh..wh..opq" in names and not any(n.startswith("tmp/.wh.old") for n in names)
    assert "var/cache/sub/.wh.b" not in names  # a removed tree is one whiteout
    assert "usr/bin/tool" not in names  # unchanged
    assert names == sorted(names, key=_order)
    for i, name in enumerate(names):  # every parent precedes its children
        parent = name.rpartition("/")[0]
        assert not parent or parent in names[:i], name
    assert _diff(lower, upper) == diff  # deterministic


def test_equal_size_and_mtime_is_unchanged_as_containerd(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for root in (lower, upper):
        _apply(root, Layer().file("same", b"aaaa").file("truncated", b"aaaa").bytes())
    ns = 1_700_000_000_123_456_789
    for root, data in ((lower, b"aaaa"), (upper, b"bbbb")):
        (root / "same").write_bytes(data)
        os.utime(root / "same", ns=(ns, ns))
    (upper / "truncated").write_bytes(b"bbbb")  # mtimes both whole seconds: content compared
    os.utime(upper / "truncated", ns=(T0 * 10**9, T0 * 10**9))
    os.utime(lower / "truncated", ns=(T0 * 10**9, T0 * 10**9))
    assert _names(_diff(lower, upper)) == ["truncated"]


def test_single_walk_from_nothing(tmp_path: Path) -> None:
    upper, copy = tmp_path / "upper", tmp_path / "copy"
    _apply(upper, _base())
    _mutate(upper)
    _apply(copy, _diff(None, upper))
    assert trees.snapshot(copy) == trees.snapshot(upper)
    assert trees.link_groups(copy) == trees.link_groups(upper)


def test_overlay_upperdir_round_trip(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _apply(lower, _base())
    with trees.overlay([lower], upper, tmp_path / "work", tmp_path / "merged") as merged:
        _mutate(merged)
        (merged / "var/cache").mkdir()  # deleted then recreated: overlayfs makes it opaque
        (merged / "var/cache/fresh").write_bytes(b"fresh")
        view = trees.snapshot(merged)
        groups = trees.link_groups(merged)
    assert os.getxattr(upper / "var/cache", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(upper / "etc/passwd").st_mode)

    for lower_arg in (lower, None):
        diff = _diff(lower_arg, upper, overlay=True)
        names = _names(diff)
        assert "etc/.wh.passwd" in names and "var/cache/.wh..wh..opq" in names
        assert not any(n.startswith("work") for n in names)
        copy = tmp_path / f"copy-{lower_arg is None}"
        _apply(copy, _base())
        _apply(copy, diff)
        assert trees.snapshot(copy) == view
        assert trees.link_groups(copy) == groups

        # and as an overlay layer again: a fresh upperdir over the same lower
        upper2 = tmp_path / f"upper2-{lower_arg is None}"
        _apply(upper2, diff, Whiteouts.OVERLAY)
        target = tmp_path / f"merged2-{lower_arg is None}"
        with trees.overlay([lower], upper2, tmp_path / f"work2-{lower_arg is None}", target):
            assert trees.snapshot(target) == view


def test_overlay_whiteout_of_nothing_is_dropped_with_a_lower(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _apply(lower, Layer().file("present").bytes())
    _apply(
        upper, Layer().file(".wh.present", b"").file(".wh.absent", b"").bytes(), Whiteouts.OVERLAY
    )
    assert _names(_diff(lower, upper, overlay=True)) == [".wh.present"]
    assert _names(_diff(None, upper, overlay=True)) == [".wh.absent", ".wh.present"]


def test_overlay_metacopy_upperdir_is_refused(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_bytes(b"")
    os.setxattr(upper / "f", "trusted.overlay.metacopy", b"")
    with pytest.raises(Unimplemented, match="metacopy"):
        _diff(None, upper, overlay=True)


def test_symlinks_in_upper_are_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_bytes(b"do not ship")
    upper = tmp_path / "upper"
    upper.mkdir()
    os.symlink(secret, upper / "link")
    os.symlink(secret / "key", upper / "keylink")
    diff = _diff(None, upper)
    assert b"do not ship" not in diff
    assert _names(diff) == ["keylink", "link"]


def test_xattrs_travel_except_trusted_and_selinux(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_bytes(b"x")
    os.setxattr(upper / "f", "user.keep", b"\x00\xffbinary")
    os.setxattr(upper / "f", "trusted.drop", b"1")
    with tarfile.open(fileobj=io.BytesIO(_diff(None, upper))) as tf:
        member = tf.next()
    assert member is not None
    # (hdrcharset=BINARY: tarfile marks the records that are not UTF-8, as POSIX says)
    assert set(member.pax_headers) - {"hdrcharset"} == {"SCHILY.xattr.user.keep"}
    copy = tmp_path / "copy"
    _apply(copy, _diff(None, upper))
    assert os.getxattr(copy / "f", "user.keep") == b"\x00\xffbinary"


def test_compressed_digest_writer(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _apply(upper, _base())
    sink = io.BytesIO()
    writer = CompressedDigestWriter(sink)
    n = write_diff(None, upper, writer, upper_is_overlay_upperdir=False)
    writer.close()
    blob = sink.getvalue()
    tar = gzip.decompress(blob)
    assert (
        (writer.uncompressed_size, writer.compressed_size)
        == (n, len(blob))
        == (len(tar), len(blob))
    )
    assert writer.compressed_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert writer.uncompressed_digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    copy = tmp_path / "copy"
    copy.mkdir()
    result = apply_layer([blob], TAR_GZIP, copy, Whiteouts.DELETE)
    assert result.diff_id == writer.uncompressed_digest
    assert trees.snapshot(copy) == trees.snapshot(upper)
