"""Apply a layer (an OCI changeset tar) onto a directory: containerd's ``archive.Apply``.

The layer is untrusted input. Every filesystem call is made relative to a
directory file descriptor and never follows a symlink (``O_NOFOLLOW``,
``AT_SYMLINK_NOFOLLOW``, ``linkat`` without ``AT_SYMLINK_FOLLOW``); the
directory descriptors themselves come from ``_Tree``, which resolves a path
one component at a time inside the root. So no entry can create, replace,
follow or write anything outside ``root``, whatever symlinks, ``..`` or
replacements earlier entries (or lower layers) put in the tree.

Behaviour, as containerd v1.7 (``archive/tar.go``, ``tar_unix.go``,
``tar_opts_linux.go``):

* names are cleaned (``a//b/./c`` -> ``a/b/c``, a leading ``/`` dropped); the
  root entry itself (``./``) is ignored;
* symlinks met while resolving an entry's *parent* are followed inside the
  root, as containerd's ``fs.RootPath`` does: an absolute target starts again
  at the root and ``..`` stops there. The entry's own name is never followed;
* an existing path is removed before an entry is written, except a directory
  meeting a directory entry, which keeps its content and takes the metadata;
* missing parents are created 0755 (with ``parents``: with the mode, owner,
  times and non-``trusted.`` xattrs of the first parent layer that has them);
* owner (numeric, lchown), xattrs from ``SCHILY.xattr.*`` (``trusted.*`` and
  unsupported ones are skipped with a warning), then mode (after chown, which
  clears setuid), then times; directory times are set again at the end, after
  their children were written;
* whiteouts: ``Whiteouts.OVERLAY`` writes overlayfs ones (a 0:0 character
  device; ``trusted.overlay.opaque=y``), ``Whiteouts.DELETE`` removes what they
  hide from a full copy of the parent.

Where this differs from containerd, on purpose (each is a hostile or invalid layer):

* a name or hard link target whose ``..`` climbs above the root is refused
  (``UnsafeLayer``) instead of being clamped to the root;
* names longer than PATH_MAX (4096 bytes) are refused before touching the disk,
  where containerd fails on ENAMETOOLONG; PAX and GNU long-name headers are
  capped at 1 MiB, as Go's archive/tar does;
* whiteouts never remove what the same layer wrote (the OCI spec: they apply to
  lower layers only). containerd deletes such an entry, or fails on EEXIST with
  overlay whiteouts, and its opaque marker also removes directories that this
  layer created implicitly, with what it wrote in them;
* GNU sparse files are refused (no layer tool writes them).

Tar parsing is our own (``_TarReader``, Go's rules): it is the hot loop, and
it lets claimed sizes be streamed through instead of trusted.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from zlib import adler32

from services.snapshots.compression import LayerReader, open_layer
from shared.content import CHUNK_SIZE
from shared.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

__all__ = ["ApplyResult", "UnsafeLayer", "Whiteouts", "apply_layer"]

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"


class UnsafeLayer(InvalidArgument):
    """An entry that would reach outside the root, or a path that cannot be resolved inside it."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"unsafe layer entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


class Whiteouts(enum.Enum):
    OVERLAY = "overlay"  # root is an overlayfs upperdir: whiteouts become devices and xattrs
    DELETE = "delete"  # root is a full copy of the parent: whiteouts delete


@dataclass(frozen=True)
class ApplyResult:
    diff_id: str  # sha256:<hex> of the uncompressed tar
    size: int  # uncompressed bytes
    entries: int  # tar entries applied (whiteouts included, PAX/GNU extension headers not)


# ---------------------------------------------------------------------------
# Tar headers. Go's archive/tar is the reference: ustar, PAX and GNU long names,
# base-256 numbers, checksums signed or unsigned, extension headers capped at 1 MiB.

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_MAX_SPECIAL = 1 << 20  # Go's maxSpecialFileSize for PAX and GNU long-name headers
_MAX_NAME = 4096  # PATH_MAX
_OCTAL = b"01234567"
_DIGITS = b"0123456789"

_REG, _REGA, _LINK, _SYMLINK = 0x30, 0x00, 0x31, 0x32  # typeflags 0 NUL 1 2
_CHAR, _BLK, _DIR, _FIFO = 0x33, 0x34, 0x35, 0x36  # 3 4 5 6
_PAX, _GLOBAL, _LONGNAME, _LONGLINK = 0x78, 0x67, 0x4C, 0x4B  # x g L K
_HEADER_ONLY = frozenset({_LINK, _SYMLINK, _CHAR, _BLK, _DIR, _FIFO})
_MAX_TIME_NS = (1 << 63) - 1


class _Header:
    __slots__ = (
        "atime",
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mode",
        "mtime",
        "name",
        "size",
        "type",
        "uid",
        "xattrs",
    )

    name: str
    type: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int  # ns, bounded like containerd's boundTime
    atime: int  # ns, never before mtime (containerd's latestTime)
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] | None


def _cstr(b: bytes) -> bytes:
    i = b.find(0)
    return b if i < 0 else b[:i]


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256, big-endian two's complement
        negative = bool(field[0] & 0x40)
        raw = bytes([field[0] & 0x7F | (0x80 if negative else 0)]) + field[1:]
        value = int.from_bytes(raw, "big", signed=negative)
        if not -(1 << 63) <= value < (1 << 63):
            raise InvalidArgument("tar header: numeric field overflows")
        return value
    s = field.strip(b" \x00")
    if not s:
        return 0
    if s.translate(None, _OCTAL):
        raise InvalidArgument(f"tar header: invalid octal field {field!r}")
    return int(s, 8)


_OCTAL_SP = b"01234567 "


def _numbers(blk: bytes) -> tuple[int, int, int, int, int, int]:
    """mode, uid, gid, size, mtime and checksum of a header, in one go (the hot path)."""
    fields = blk[100:156].replace(b"\x00", b" ")
    if not fields.translate(None, _OCTAL_SP):
        try:  # int() strips the padding; an empty or split field falls through to the slow path
            return (
                int(fields[0:8], 8),
                int(fields[8:16], 8),
                int(fields[16:24], 8),
                int(fields[24:36], 8),
                int(fields[36:48], 8),
                int(fields[48:56], 8),
            )
        except ValueError:
            pass
    return (
        _number(blk[100:108]),
        _number(blk[108:116]),
        _number(blk[116:124]),
        _number(blk[124:136]),
        _number(blk[136:148]),
        _number(blk[148:156]),
    )


def _pax_int(value: bytes, key: str) -> int:
    if not value or value.translate(None, _DIGITS) or len(value) > 19:
        raise InvalidArgument(f"tar PAX record {key}={value!r} is not a valid number")
    return int(value)


def _pax_time(value: bytes) -> int:
    sign = -1 if value.startswith(b"-") else 1
    whole, _, frac = value.removeprefix(b"-").partition(b".")
    digits = whole + frac
    if not whole or digits.translate(None, _DIGITS) or len(whole) > 19:
        raise InvalidArgument(f"tar PAX time {value!r} is not valid")
    return sign * (int(whole) * 1_000_000_000 + int((frac + b"000000000")[:9]))


def _bound(ns: int) -> int:
    return ns if 0 <= ns <= _MAX_TIME_NS else 0


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """PAX records: ``"<len> <key>=<value>\\n"``; an empty value deletes the key (POSIX)."""
    records: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0:  # padding written by some tools after the last record
            if data[pos:].strip(b"\x00"):
                break
            return records
        space = data.find(b" ", pos, pos + 21)
        length_field = data[pos:space] if space > pos else b""
        if not length_field or length_field.translate(None, _DIGITS):
            break
        length = int(length_field)
        record = data[space + 1 : pos + length]
        if pos + length > end or length <= space - pos + 1 or not record.endswith(b"\n"):
            break
        key, eq, value = record[:-1].partition(b"=")
        if not eq or not key:
            break
        if key in (b"path", b"linkpath") and b"\x00" in value:
            break
        if value:
            records[key] = value
        else:
            records.pop(key, None)
        pos += length
    else:
        return records
    raise InvalidArgument("tar PAX header is malformed")


class _TarReader:
    """Headers and data of a tar stream, read with 1 MiB reads and never seeking.

    After ``next`` returns a regular file, ``write_data`` copies its data to an
    fd; whatever is not copied is skipped when ``next`` is called again.
    Claimed sizes are only ever read through, never allocated.
    """

    def __init__(self, stream: LayerReader) -> None:
        self._stream = stream
        self._label = stream.label
        self._buf = b""
        self._pos = 0
        self._data = 0  # data bytes of the current entry not consumed yet
        self._pad = 0

    def _truncated(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"{self._label}: truncated tar: unexpected end of data in {what}")

    def _fill(self, n: int) -> bool:
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos :]]
        while have < n:
            chunk = self._stream.read(CHUNK_SIZE)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._pos = b"".join(parts), 0
        return have >= n

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise self._truncated(what)
        b = self._buf[self._pos : self._pos + n]
        self._pos += n
        return b

    def _skip(self, n: int, what: str) -> None:
        have = len(self._buf) - self._pos
        if n <= have:
            self._pos += n
            return
        n -= have
        self._buf, self._pos = b"", 0
        while n > 0:
            chunk = self._stream.read(CHUNK_SIZE)
            if not chunk:
                raise self._truncated(what)
            if len(chunk) > n:
                self._buf, self._pos = chunk, n
                return
            n -= len(chunk)

    def write_data(self, fd: int) -> None:
        n = self._data
        while n:
            if self._pos >= len(self._buf):
                chunk = self._stream.read(CHUNK_SIZE)
                if not chunk:
                    raise self._truncated("file data")
                self._buf, self._pos = chunk, 0
            k = min(len(self._buf) - self._pos, n)
            view = memoryview(self._buf)[self._pos : self._pos + k]
            while view:
                view = view[os.write(fd, view) :]
            self._pos += k
            n -= k
        self._data = 0

    def next(self) -> _Header | None:
        if self._data or self._pad:
            self._skip(self._data + self._pad, "file data")
            self._data = self._pad = 0
        pax: dict[bytes, bytes] = {}
        longname = longlink = None
        while True:
            if not self._fill(_BLOCK):
                pending = pax or longname is not None or longlink is not None
                if self._pos == len(self._buf) and not pending:
                    return None  # EOF at a header boundary: Go accepts it
                raise self._truncated("header")
            blk = self._buf[self._pos : self._pos + _BLOCK]
            self._pos += _BLOCK
            if blk == _ZERO_BLOCK:
                if self._fill(_BLOCK) and self._take(_BLOCK, "header") != _ZERO_BLOCK:
                    raise InvalidArgument(f"{self._label}: invalid tar header after end of archive")
                return None
            mode, uid, gid, size, mtime, chksum = _numbers(blk)
            self._checksum(blk, chksum)
            kind = blk[156]
            if size < 0:
                raise InvalidArgument(f"{self._label}: tar header with negative size")
            if kind in (_PAX, _GLOBAL, _LONGNAME, _LONGLINK):
                if size > _MAX_SPECIAL:
                    raise InvalidArgument(f"{self._label}: tar extension header of {size} bytes")
                data = self._take(size, "extension header")
                self._skip(-size % _BLOCK, "extension header")
                if kind == _PAX:
                    pax = _parse_pax(data)
                elif kind == _GLOBAL:
                    _parse_pax(data)  # validated, then ignored, as containerd does
                elif kind == _LONGNAME:
                    longname = _cstr(data)
                else:
                    longlink = _cstr(data)
                continue
            h = self._header(blk, kind, size, pax, longname, longlink, uid, gid, mtime)
            h.mode = mode
            return h

    def _checksum(self, blk: bytes, recorded: int) -> None:
        # Byte sums by Adler-32's low half (1 + sum of bytes, exact below 65521: 256 bytes at a
        # time); sum() over 512 bytes costs more than the rest of the header parsing.
        unsigned = ((adler32(blk[:256]) & 0xFFFF) + (adler32(blk[256:]) & 0xFFFF) - 2 + 8 * 32) - (
            (adler32(blk[148:156]) & 0xFFFF) - 1
        )
        if recorded != unsigned:
            high = sum(1 for b in blk[:148] + blk[156:] if b >= 128)
            if recorded != unsigned - 256 * high:
                raise InvalidArgument(f"{self._label}: invalid tar header checksum")

    def _header(
        self,
        blk: bytes,
        kind: int,
        size: int,
        pax: dict[bytes, bytes],
        longname: bytes | None,
        longlink: bytes | None,
        uid: int,
        gid: int,
        mtime: int,
    ) -> _Header:
        name = blk[0:100].partition(b"\x00")[0]
        magic = blk[257:263]
        if magic == b"ustar\x00" and blk[345]:
            prefix = _cstr(blk[345:476] if blk[508:512] == b"tar\x00" else blk[345:500])
            if prefix:
                name = prefix + b"/" + name
        h = _Header()
        mtime *= 1_000_000_000
        atime = 0
        if magic == b"ustar " and blk[345] not in (0, 32):  # GNU format's atime
            atime = _number(blk[345:357]) * 1_000_000_000
        linkname = blk[157:257].partition(b"\x00")[0]
        h.xattrs = None
        for key, value in pax.items():
            if key == b"path":
                name = value
            elif key == b"linkpath":
                linkname = value
            elif key == b"size":
                size = _pax_int(value, "size")
            elif key == b"uid":
                uid = _pax_int(value, "uid")
            elif key == b"gid":
                gid = _pax_int(value, "gid")
            elif key == b"mtime":
                mtime = _pax_time(value)
            elif key == b"atime":
                atime = _pax_time(value)
            elif key.startswith(b"SCHILY.xattr."):
                if h.xattrs is None:
                    h.xattrs = {}
                h.xattrs[key[13:].decode("utf-8", "surrogateescape")] = value
            elif key.startswith(b"GNU.sparse."):
                raise InvalidArgument(f"{self._label}: sparse tar entries are not supported")
        if longname is not None:
            name = longname
        if longlink is not None:
            linkname = longlink
        if len(name) > _MAX_NAME or len(linkname) > _MAX_NAME:
            raise InvalidArgument(f"{self._label}: tar entry name longer than {_MAX_NAME} bytes")
        if not (0 <= uid < 0xFFFFFFFF and 0 <= gid < 0xFFFFFFFF):
            raise InvalidArgument(f"{self._label}: tar entry with invalid owner {uid}:{gid}")
        if kind == _REGA and name.endswith(b"/"):
            kind = _DIR
        elif kind == _REGA:
            kind = _REG
        h.devmajor = h.devminor = 0
        if kind in (_CHAR, _BLK):
            h.devmajor = _number(blk[329:337])
            h.devminor = _number(blk[337:345])
        h.name = name.decode("utf-8", "surrogateescape")
        h.linkname = linkname.decode("utf-8", "surrogateescape")
        h.type, h.size, h.uid, h.gid = kind, size, uid, gid
        h.mtime = _bound(mtime)
        h.atime = max(_bound(atime), h.mtime)
        if kind not in _HEADER_ONLY:  # Go reads no data for header-only types, whatever the size
            self._data, self._pad = size, -size % _BLOCK
        return h


# ---------------------------------------------------------------------------
# Paths inside the root.

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 255  # as fs.RootPath
_MAX_CACHED = 256


def _clean(name: str) -> list[str]:
    """Lexically cleaned components, without a leading ``/``; UnsafeLayer if ``..`` escapes."""
    parts = name.split("/")
    if "" not in parts and "." not in parts and ".." not in parts:
        return parts
    out: list[str] = []
    for p in parts:
        if p == "" or p == ".":
            continue
        if p == "..":
            if not out:
                raise UnsafeLayer(name, "path escapes the root with '..'")
            out.pop()
        else:
            out.append(p)
    return out


def _join(real: str, name: str) -> str:
    return f"{real}/{name}" if real else name


class _Tree:
    """``O_PATH`` descriptors of directories under one root, found without leaving it.

    ``lookup(path)`` resolves ``path`` one component at a time with
    ``O_NOFOLLOW`` opens relative to the previous directory. A symlink on the
    way is read and its target resolved the same way inside the root, so the
    answer is where containerd's ``fs.RootPath`` would land, but no syscall
    ever follows a link. Results are cached by path (layers list entries depth
    first); ``invalidate`` must be called whenever a directory or symlink is
    removed. Invalidated descriptors stay open until ``release``, so a caller
    holding one for the current entry is not left with a reused number.
    """

    def __init__(
        self, root_fd: int, on_mkdir: Callable[[int, str, str], None] | None = None
    ) -> None:
        self._root = root_fd
        self._on_mkdir = on_mkdir
        self._fds: dict[str, int] = {"": root_fd}  # real path -> fd; prefix-closed
        self._keys: dict[str, str] = {"": ""}  # looked-up path -> real path
        self._dead: list[int] = []

    def lookup(self, path: str, create: bool) -> tuple[int, str]:
        """The directory fd and real (symlink-free) path of ``path``; ``create`` makes it."""
        real = self._keys.get(path)
        if real is None:
            if len(self._fds) > _MAX_CACHED:
                self.invalidate()
            real = self._walk(path, create)
            self._keys[path] = real
        return self._fds[real], real

    def _walk(self, path: str, create: bool) -> str:
        comps = path.split("/")
        i, real = len(comps) - 1, ""
        while i > 0:
            hit = self._keys.get("/".join(comps[:i]))
            if hit is not None:
                real = hit
                break
            i -= 1
        todo = comps[i:][::-1]
        links = 0
        while todo:
            c = todo.pop()
            if c == "" or c == ".":
                continue
            if c == "..":
                real = real.rpartition("/")[0]
                continue
            child = _join(real, c)
            if child in self._fds:
                real = child
                continue
            fd = self._fds[real]
            try:
                nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(c, 0o755, dir_fd=fd)
                os.chmod(c, 0o755, dir_fd=fd, follow_symlinks=False)  # no umask, as containerd
                if self._on_mkdir is not None:
                    self._on_mkdir(fd, c, child)
                nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                try:
                    target = os.readlink(c, dir_fd=fd)
                except OSError:
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", child) from None
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafeLayer(path, "too many levels of symbolic links") from None
                if target.startswith("/"):
                    real = ""
                todo.extend(reversed(target.split("/")))
                continue
            self._fds[child] = nfd
            real = child
        return real

    def invalidate(self) -> None:
        self._dead.extend(fd for real, fd in self._fds.items() if real)
        self._fds = {"": self._root}
        self._keys = {"": ""}

    def release(self) -> None:
        while self._dead:
            os.close(self._dead.pop())

    def close(self) -> None:
        self.invalidate()
        self.release()


def _remove_tree(parent_fd: int, name: str) -> None:
    """``rm -rf name``, never following symlinks; iterative, as the depth is the layer's."""
    try:
        os.unlink(name, dir_fd=parent_fd)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    # Frames: (parent fd, name, fd, subdirectories still to remove); one fd per level.
    stack: list[tuple[int, str, int, list[str]]] = []
    try:
        pfd, dname = parent_fd, name
        while True:
            fd = os.open(dname, _LIST_FLAGS, dir_fd=pfd)
            subdirs: list[str] = []
            stack.append((pfd, dname, fd, subdirs))
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for entry, is_dir in entries:
                if is_dir:
                    subdirs.append(entry)
                else:
                    os.unlink(entry, dir_fd=fd)
            while stack and not stack[-1][3]:
                pfd, dname, fd, _ = stack.pop()
                os.close(fd)
                os.rmdir(dname, dir_fd=pfd)
            if not stack:
                return
            pfd, dname = stack[-1][2], stack[-1][3].pop()
    finally:
        for _, _, fd, _ in stack:
            os.close(fd)


# ---------------------------------------------------------------------------
# Applying entries.


def _set_xattrs(target: int | str, xattrs: dict[str, bytes], mode: int, name: str) -> None:
    """``target`` is an open fd or a ``/proc/self/fd/<dir>/<name>`` path (set without following)."""
    for key, value in xattrs.items():
        if key.startswith("trusted."):
            log.warning("ignored xattr %s of %s: trusted.* is never set from a layer", key, name)
            continue
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as e:
            # user.* exists only on files and directories; unsupported ones are skipped (containerd)
            if e.errno == errno.ENOTSUP or (
                e.errno == errno.EPERM
                and key.startswith("user.")
                and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
            ):
                log.warning("ignored xattr %s of %s: %s", key, name, e.strerror)
                continue
            raise


_DEVICE_TYPES = {_CHAR: stat.S_IFCHR, _BLK: stat.S_IFBLK, _FIFO: stat.S_IFIFO}


@functools.cache
def _in_user_namespace() -> bool:
    """As containerd's userns.RunningInUserNS: there, device entries are skipped, not fatal."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


class _Applier:
    def __init__(self, root_fd: int, whiteouts: Whiteouts, parents: Sequence[_Tree]) -> None:
        self._overlay = whiteouts is Whiteouts.OVERLAY
        self._parents = parents
        self._tree = _Tree(root_fd, self._copy_parent_dir if parents else None)
        # DELETE mode: real paths this layer wrote, and their ancestors (kept by opaque markers)
        self._unpacked: set[str] = set()
        self._keep: set[str] = set()
        self._opaque_done: set[str] = set()
        self._dir_times: dict[str, tuple[int, int]] = {}
        self.entries = 0

    def close(self) -> None:
        self._tree.close()

    def apply(self, h: _Header, tar: _TarReader) -> None:
        self._tree.release()
        self.entries += 1
        parts = _clean(h.name)
        if not parts:
            return  # the root itself: containerd ignores it
        base = parts[-1]
        parent = "/".join(parts[:-1])
        pfd, preal = self._tree.lookup(parent, create=True)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(h, pfd, preal, base)
            return
        kind = h.type
        if kind == _REG:
            self._file(h, pfd, base, tar)
        elif kind == _DIR:
            self._dir(h, pfd, base)
            self._dir_times["/".join(parts)] = (h.atime, h.mtime)
        elif kind == _SYMLINK:
            self._create(pfd, base, lambda: os.symlink(h.linkname, base, dir_fd=pfd))
            self._metadata(h, pfd, base, stat.S_IFLNK)
        elif kind == _LINK:
            self._hardlink(h, pfd, base)
        elif kind in _DEVICE_TYPES:
            if kind != _FIFO and _in_user_namespace():
                log.warning("device %s ignored: cannot be created in a user namespace", h.name)
                return
            if not (0 <= h.devmajor <= 0xFFFFFFFF and 0 <= h.devminor <= 0xFFFFFFFF):
                numbers = f"{h.devmajor}:{h.devminor}"
                raise InvalidArgument(f"{h.name}: device number {numbers} out of range")
            mode = _DEVICE_TYPES[kind]
            dev = os.makedev(h.devmajor, h.devminor) if kind != _FIFO else 0
            self._create(pfd, base, lambda: os.mknod(base, mode | 0o600, dev, dir_fd=pfd))
            self._metadata(h, pfd, base, mode)
        else:
            raise InvalidArgument(f"{h.name}: unsupported tar entry type {chr(kind)!r}")
        if not self._overlay:
            real = _join(preal, base)
            self._unpacked.add(real)
            p = preal
            while p and p not in self._keep:
                self._keep.add(p)
                p = p.rpartition("/")[0]

    def finish(self) -> None:
        """Directory times, once nothing more is written in them (containerd does the same)."""
        for name, (atime, mtime) in self._dir_times.items():
            self._tree.release()
            parent, _, base = name.rpartition("/")
            try:
                pfd, _ = self._tree.lookup(parent, create=False)
                if stat.S_ISDIR(os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode):
                    os.utime(base, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, UnsafeLayer):
                continue  # removed or replaced later in the layer

    # -- entry kinds

    def _create(self, pfd: int, base: str, make: Callable[[], object]) -> None:
        try:
            make()
        except FileExistsError:
            self._remove(pfd, base)
            make()

    def _remove(self, pfd: int, base: str) -> None:
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _remove_tree(pfd, base)
            self._tree.invalidate()
        else:
            os.unlink(base, dir_fd=pfd)
            if stat.S_ISLNK(st.st_mode):
                self._tree.invalidate()

    def _file(self, h: _Header, pfd: int, base: str, tar: _TarReader) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        except FileExistsError:  # never open what is there: it may be a FIFO, or a link
            self._remove(pfd, base)
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            tar.write_data(fd)
            os.fchown(fd, h.uid, h.gid)
            if h.xattrs:
                _set_xattrs(fd, h.xattrs, stat.S_IFREG, h.name)
            os.fchmod(fd, h.mode & 0o7777)
            os.utime(fd, ns=(h.atime, h.mtime))
        finally:
            os.close(fd)

    def _dir(self, h: _Header, pfd: int, base: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode):
                self._remove(pfd, base)
                os.mkdir(base, 0o700, dir_fd=pfd)
        os.chown(base, h.uid, h.gid, dir_fd=pfd, follow_symlinks=False)
        if h.xattrs:
            _set_xattrs(f"/proc/self/fd/{pfd}/{base}", h.xattrs, stat.S_IFDIR, h.name)
        os.chmod(base, h.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, h: _Header, pfd: int, base: str) -> None:
        target = _clean(h.linkname)
        if not target:
            raise UnsafeLayer(h.name, "hard link to the root directory")
        try:
            tfd, _ = self._tree.lookup("/".join(target[:-1]), create=False)
        except FileNotFoundError:
            missing = f"{h.name}: hard link target {h.linkname!r} does not exist"
            raise InvalidArgument(missing) from None

        def link() -> None:
            # linkat without AT_SYMLINK_FOLLOW: a link to a symlink is a link to the symlink
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

        self._create(pfd, base, link)
        mode = os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode
        self._metadata(h, pfd, base, mode)

    def _metadata(self, h: _Header, pfd: int, base: str, mode: int) -> None:
        os.chown(base, h.uid, h.gid, dir_fd=pfd, follow_symlinks=False)
        if h.xattrs:
            _set_xattrs(f"/proc/self/fd/{pfd}/{base}", h.xattrs, mode, h.name)
        if not stat.S_ISLNK(mode):  # symlinks have no mode of their own
            os.chmod(base, h.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, ns=(h.atime, h.mtime), dir_fd=pfd, follow_symlinks=False)

    # -- whiteouts

    def _whiteout(self, h: _Header, pfd: int, preal: str, base: str) -> None:
        if base == WHITEOUT_OPAQUE:
            if self._overlay:
                os.setxattr(f"/proc/self/fd/{pfd}", OVERLAY_OPAQUE_XATTR, b"y")
            else:
                self._purge(preal)
            return
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise UnsafeLayer(h.name, "invalid whiteout name")
        if self._overlay:
            try:
                os.mknod(hidden, stat.S_IFCHR, 0, dir_fd=pfd)
            except FileExistsError:
                return  # written by this layer: whiteouts only hide lower layers
            os.chown(hidden, h.uid, h.gid, dir_fd=pfd, follow_symlinks=False)
            return
        real = _join(preal, hidden)
        if real in self._unpacked:
            return
        if real in self._keep:  # this layer wrote inside it: keep only that
            self._purge(real)
            return
        with contextlib.suppress(FileNotFoundError):
            self._remove(pfd, hidden)

    def _purge(self, real: str) -> None:
        """Remove what directory ``real`` holds that this layer did not write (opaque, DELETE)."""
        if real in self._opaque_done:
            return
        self._opaque_done.add(real)
        todo = [real]
        while todo:
            current = todo.pop()
            dfd, _ = self._tree.lookup(current, create=False)
            lfd = os.open(".", _LIST_FLAGS, dir_fd=dfd)
            try:
                with os.scandir(lfd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            finally:
                os.close(lfd)
            for name, is_dir in entries:
                child = _join(current, name)
                if child in self._unpacked or child in self._keep:
                    if is_dir:
                        todo.append(child)
                elif is_dir:
                    _remove_tree(dfd, name)
                else:
                    os.unlink(name, dir_fd=dfd)
        self._tree.invalidate()

    # -- implicit parents

    def _copy_parent_dir(self, fd: int, name: str, real: str) -> None:
        """Give a directory created implicitly the metadata it has in the first parent layer."""
        parent, _, base = real.rpartition("/")
        for layer in self._parents:
            try:
                lfd, _ = layer.lookup(parent, create=False)
                st = os.stat(base, dir_fd=lfd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            finally:
                layer.release()
            if not stat.S_ISDIR(st.st_mode):
                return  # replaced in that layer: defaults
            os.chown(name, st.st_uid, st.st_gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=fd, follow_symlinks=False)
            src, dst = f"/proc/self/fd/{lfd}/{base}", f"/proc/self/fd/{fd}/{name}"
            for key in os.listxattr(src, follow_symlinks=False):
                if key.startswith("trusted."):
                    continue
                try:
                    value = os.getxattr(src, key, follow_symlinks=False)
                    os.setxattr(dst, key, value, os.XATTR_CREATE, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in (errno.ENOTSUP, errno.ENODATA, errno.EEXIST):
                        raise
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)
            return


def _entry_error(e: OSError, label: str, name: str) -> Exception:
    what = f"{label}: entry {name!r}: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(what)
    return InvalidArgument(what)


def _open_dir(path: Path) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as e:
        raise FailedPrecondition(f"cannot apply a layer in {path}: {e.strerror}") from e


def apply_layer(
    chunks: Iterable[bytes] | BinaryIO,
    media_type: str,
    root: Path,
    whiteouts: Whiteouts,
    *,
    parents: Sequence[Path] = (),
    label: str = "",
) -> ApplyResult:
    """Stream a layer blob onto ``root``; the diff ID is computed on the way.

    ``parents`` are the parent snapshots' directories, nearest first, used only
    to give implicitly created directories their lower metadata (containerd's
    ``WithParents``; pass them for an overlay upperdir). ``label``, the blob's
    digest, names the layer in errors ("layer sha256:..: truncated gzip stream").

    On error (InvalidArgument, UnsafeLayer, ResourceExhausted, Unimplemented
    for the media type) whatever was written stays inside ``root``: discard it.
    """
    stream = open_layer(chunks, media_type, label=label)
    root_fd = _open_dir(root)
    parent_fds: list[int] = []
    parent_trees: list[_Tree] = []
    applier: _Applier | None = None
    try:
        for p in parents:
            parent_fds.append(_open_dir(p))
            parent_trees.append(_Tree(parent_fds[-1]))
        applier = _Applier(root_fd, whiteouts, parent_trees)
        tar = _TarReader(stream)
        while (h := tar.next()) is not None:
            try:
                applier.apply(h, tar)
            except OSError as e:
                raise _entry_error(e, stream.label, h.name) from e
        try:
            applier.finish()
        except OSError as e:
            raise _entry_error(e, stream.label, "directory times") from e
        stream.drain()
        return ApplyResult(stream.diff_id, stream.size, applier.entries)
    finally:
        if applier is not None:
            applier.close()
        for t in parent_trees:
            t.close()
        for fd in parent_fds:
            os.close(fd)
        os.close(root_fd)
