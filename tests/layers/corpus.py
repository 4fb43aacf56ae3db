"""Malicious and broken layers, built in memory (no binary tarballs in the repository).

Each case takes ``outside``, the absolute path of a sentinel directory that
sits beside the apply root (``<tmp>/outside`` next to ``<tmp>/root``), so
attacks aim at unique temporary paths, never at real system files. The test
(tests/unit/test_layer_archive.py) applies each case in both whiteout modes
and checks that nothing beside the root changed. README.md lists the cases.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import zstandard

TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

ROOT_TO_OUTSIDE = "../outside"  # the sentinel directory, relative to the root


class Layer:
    """A tar being built entry by entry (PAX format, numeric owners)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()

    def _info(self, name: str, kind: bytes, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = kind, mode, 1_700_000_000
        for k, v in kw.items():
            setattr(ti, k, v)
        return ti

    def add(self, ti: tarfile.TarInfo, data: bytes = b"") -> Layer:
        ti.size = len(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        self._buf.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if data:
            self._buf.write(data + bytes(-len(data) % 512))
        return self

    def file(self, name: str, data: bytes = b"pwned\n", mode: int = 0o644, **kw: object) -> Layer:
        return self.add(self._info(name, tarfile.REGTYPE, mode, **kw), data)

    def dir(self, name: str, mode: int = 0o755, **kw: object) -> Layer:
        return self.add(self._info(name, tarfile.DIRTYPE, mode, **kw))

    def symlink(self, name: str, target: str) -> Layer:
        return self.add(self._info(name, tarfile.SYMTYPE, 0o777, linkname=target))

    def hardlink(self, name: str, target: str, mode: int = 0o644, **kw: object) -> Layer:
        # containerd applies a hard link header's owner, mode and times to the shared inode
        return self.add(self._info(name, tarfile.LNKTYPE, mode, linkname=target, **kw))

    def device(self, name: str, kind: bytes, major: int = 0, minor: int = 0) -> Layer:
        return self.add(self._info(name, kind, 0o666, devmajor=major, devminor=minor))

    def raw(self, data: bytes) -> Layer:
        self._buf.write(data)
        return self

    def bytes(self, end: bool = True) -> bytes:
        return self._buf.getvalue() + (bytes(1024) if end else b"")


def _huge_truncated(_: Path) -> bytes:
    ti = tarfile.TarInfo("huge")
    ti.size = 10**12  # 1 TB claimed (a PAX size record), ten bytes present
    return ti.tobuf(tarfile.PAX_FORMAT) + b"0123456789"


def _huge_base256(_: Path) -> bytes:
    ti = tarfile.TarInfo("huge")
    ti.size = 1 << 40  # GNU base-256 size field
    return ti.tobuf(tarfile.GNU_FORMAT) + b"x" * 100


def _huge_pax_header(_: Path) -> bytes:
    # a PAX header record 2 MiB long: Go (and we) cap extension headers at 1 MiB
    value = "a" * (2 << 20)
    ti = tarfile.TarInfo("x")
    ti.pax_headers = {"comment": value}
    return ti.tobuf(tarfile.PAX_FORMAT) + bytes(1024)


def _valid_layer() -> bytes:
    layer = Layer().dir("data/")
    for i in range(50):
        layer.file(f"data/f{i}", bytes(range(256)) * 40)
    return layer.bytes()


def _truncated_gzip(_: Path) -> bytes:
    blob = gzip.compress(_valid_layer())
    return blob[: len(blob) // 2]


def _truncated_zstd(_: Path) -> bytes:
    blob = zstandard.ZstdCompressor().compress(_valid_layer())
    return blob[: len(blob) // 2]


def _corrupt_gzip(_: Path) -> bytes:
    blob = bytearray(gzip.compress(_valid_layer()))
    for i in range(40, 60):
        blob[i] ^= 0xFF
    return bytes(blob)


def _bad_checksum(_: Path) -> bytes:
    blk = bytearray(Layer().file("a").bytes())
    blk[0] = ord("b")  # name changed, checksum not
    return bytes(blk)


def _nul_in_pax_path(_: Path) -> bytes:
    ti = tarfile.TarInfo("ok")
    ti.pax_headers = {"path": "a\x00/../../evil"}
    return ti.tobuf(tarfile.PAX_FORMAT) + bytes(1024)


def _bomb(_: Path) -> bytes:
    layer = Layer()
    for d in range(100):
        layer.dir(f"d{d:03}/")
        for f in range(1000):
            layer.file(f"d{d:03}/f{f:04}", b"")
    return layer.bytes()


Outcome = Literal["refused", "contained"]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    build: Callable[[Path], bytes]  # outside -> layer blob
    expect: Outcome
    media_type: str = TAR
    # paths (relative to the root) that a contained attack leaves inside the root
    inside: Callable[[Path], list[str]] = field(default=lambda _: [])


def _abs(outside: Path, *rest: str) -> str:
    return str(outside.joinpath(*rest))


def _in_root(outside: Path, *rest: str) -> str:
    """Where an absolute path lands when it is resolved inside the root."""
    return str(outside.joinpath(*rest)).lstrip("/")


CASES: list[Case] = [
    Case(
        "dotdot-traversal",
        "a file named ../outside/pwned",
        lambda o: Layer().file(f"{ROOT_TO_OUTSIDE}/pwned").bytes(),
        "refused",
    ),
    Case(
        "dotdot-nested",
        "a/../../outside/pwned: '..' climbing out after a real component",
        lambda o: Layer().dir("a/").file(f"a/../{ROOT_TO_OUTSIDE}/pwned").bytes(),
        "refused",
    ),
    Case(
        "absolute-path",
        "a file named by the absolute path of the sentinel directory",
        lambda o: Layer().file(_abs(o, "pwned")).bytes(),
        "contained",
        inside=lambda o: [_in_root(o, "pwned")],
    ),
    Case(
        "symlink-escape-relative",
        "link -> ../outside, then link/pwned",
        lambda o: Layer().symlink("link", ROOT_TO_OUTSIDE).file("link/pwned").bytes(),
        "contained",
        inside=lambda o: ["outside/pwned"],
    ),
    Case(
        "symlink-escape-deep",
        "a/b/link -> ../../../../outside, then a/b/link/pwned",
        lambda o: (
            Layer()
            .dir("a/")
            .dir("a/b/")
            .symlink("a/b/link", "../../../../outside")
            .file("a/b/link/pwned")
            .bytes()
        ),
        "contained",
        inside=lambda o: ["outside/pwned"],
    ),
    Case(
        "symlink-absolute",
        "abs -> <outside> (absolute), then abs/pwned",
        lambda o: Layer().symlink("abs", str(o)).file("abs/pwned").bytes(),
        "contained",
        inside=lambda o: [_in_root(o, "pwned")],
    ),
    Case(
        "symlink-then-file",
        "victim -> <outside>/sentinel, then a regular file victim: must replace the link",
        lambda o: Layer().symlink("victim", _abs(o, "sentinel")).file("victim", b"over").bytes(),
        "contained",
        inside=lambda o: ["victim"],
    ),
    Case(
        "symlink-then-dir-merge",
        "d -> <outside> (absolute), then a directory entry d/ with mode 0777",
        lambda o: Layer().symlink("d", str(o)).dir("d/", 0o777).file("d/pwned").bytes(),
        "contained",
        inside=lambda o: ["d/pwned"],
    ),
    Case(
        "hardlink-absolute",
        "hl hard-linked to the absolute path of the sentinel file",
        lambda o: Layer().hardlink("hl", _abs(o, "sentinel")).bytes(),
        "refused",
    ),
    Case(
        "hardlink-dotdot",
        "hl hard-linked to ../outside/sentinel",
        lambda o: Layer().hardlink("hl", f"{ROOT_TO_OUTSIDE}/sentinel").bytes(),
        "refused",
    ),
    Case(
        "hardlink-through-symlink",
        "sl -> <outside>, then hl hard-linked to sl/sentinel",
        lambda o: Layer().symlink("sl", str(o)).hardlink("hl", "sl/sentinel").bytes(),
        "refused",
    ),
    Case(
        "hardlink-then-write",
        "a hard link to ../outside/sentinel followed by a file of the same name",
        lambda o: (
            Layer().hardlink("hl", f"{ROOT_TO_OUTSIDE}/sentinel").file("hl", b"overwritten").bytes()
        ),
        "refused",
    ),
    Case(
        "hardlink-to-symlink",
        "s -> <outside>/sentinel, hl hard-linked to s with mode 4777, then a file hl",
        lambda o: (
            Layer()
            .symlink("s", _abs(o, "sentinel"))
            .hardlink("hl", "s", 0o4777)
            .file("hl", b"overwritten")
            .bytes()
        ),
        "contained",
        inside=lambda o: ["hl", "s"],
    ),
    Case(
        "hardlink-to-directory",
        "hl hard-linked to a directory",
        lambda o: Layer().dir("d/").hardlink("hl", "d").bytes(),
        "refused",
    ),
    Case(
        "name-too-long",
        "a PAX path of 5000 bytes (PATH_MAX is 4096)",
        lambda o: Layer().file("a/" * 2500).bytes(),
        "refused",
    ),
    Case(
        "dir-replaced-by-symlink",
        "d/ and d/a, then d -> <outside>, then d/pwned",
        lambda o: Layer().dir("d/").file("d/a").symlink("d", str(o)).file("d/pwned").bytes(),
        "contained",
        inside=lambda o: [_in_root(o, "pwned")],
    ),
    Case(
        "symlink-replaced-by-dir",
        "s -> <outside>, then s/ as a directory, then s/pwned",
        lambda o: Layer().symlink("s", str(o)).dir("s/").file("s/pwned").bytes(),
        "contained",
        inside=lambda o: ["s/pwned"],
    ),
    Case(
        "whiteout-dotdot",
        "a whiteout named .wh.. (hides '..')",
        lambda o: Layer().file(".wh..", b"").bytes(),
        "refused",
    ),
    Case(
        "whiteout-empty",
        "a whiteout named .wh. (hides its own directory)",
        lambda o: Layer().dir("a/").file("a/.wh.", b"").bytes(),
        "refused",
    ),
    Case(
        "whiteout-dotdotdot",
        "a/.wh... (hides 'a/..')",
        lambda o: Layer().dir("a/").file("a/.wh...", b"").bytes(),
        "refused",
    ),
    Case(
        "whiteout-escape",
        "../.wh.outside: a whiteout of the sentinel directory itself",
        lambda o: Layer().file("../.wh.outside", b"").bytes(),
        "refused",
    ),
    Case(
        "whiteout-through-symlink",
        "s -> <outside>, then s/.wh.sentinel",
        lambda o: Layer().symlink("s", str(o)).file("s/.wh.sentinel", b"").bytes(),
        "contained",
    ),
    Case(
        "opaque-through-symlink",
        "s -> ../outside, then s/.wh..wh..opq (would empty the sentinel directory)",
        lambda o: Layer().symlink("s", ROOT_TO_OUTSIDE).file("s/.wh..wh..opq", b"").bytes(),
        "contained",
    ),
    Case(
        "device-through-symlink",
        "dev -> <outside>, then a character device dev/null 1:3",
        lambda o: Layer().symlink("dev", str(o)).device("dev/null", tarfile.CHRTYPE, 1, 3).bytes(),
        "contained",
        inside=lambda o: [_in_root(o, "null")],
    ),
    Case(
        "fifo-over-symlink",
        "f -> <outside>/sentinel, then a FIFO named f",
        lambda o: Layer().symlink("f", _abs(o, "sentinel")).device("f", tarfile.FIFOTYPE).bytes(),
        "contained",
        inside=lambda o: ["f"],
    ),
    Case(
        "symlink-loop",
        "a -> b, b -> a, then a/x",
        lambda o: Layer().symlink("a", "b").symlink("b", "a").file("a/x").bytes(),
        "refused",
    ),
    Case(
        "file-as-parent",
        "a regular file f, then f/x",
        lambda o: Layer().file("f").file("f/x").bytes(),
        "refused",
    ),
    Case(
        "nul-in-pax-path",
        "a PAX path record with a NUL byte",
        _nul_in_pax_path,
        "refused",
    ),
    Case("bad-checksum", "a header whose checksum does not match", _bad_checksum, "refused"),
    Case(
        "huge-size-truncated",
        "a PAX header claiming a 1 TB file, followed by ten bytes",
        _huge_truncated,
        "refused",
    ),
    Case(
        "huge-size-base256",
        "a GNU base-256 size of 1 TiB, followed by 100 bytes",
        _huge_base256,
        "refused",
    ),
    Case("huge-pax-header", "a 2 MiB PAX extended header", _huge_pax_header, "refused"),
    Case("truncated-gzip", "a gzip layer cut in half", _truncated_gzip, "refused", TAR_GZIP),
    Case("truncated-zstd", "a zstd layer cut in half", _truncated_zstd, "refused", TAR_ZSTD),
    Case("corrupt-gzip", "a gzip layer with 20 flipped bytes", _corrupt_gzip, "refused", TAR_GZIP),
]

# 100,000 empty files in 100 directories: contained, and fast enough to test.
BOMB = Case("tar-bomb", "100,000 tiny files", _bomb, "contained")
