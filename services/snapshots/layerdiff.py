"""Compute a layer from two trees: containerd's ``archive.WriteDiff`` over continuity's changes.

``write_diff(lower, upper, out)`` writes an uncompressed PAX tar of what
changed from ``lower`` to ``upper``: added and modified entries in full,
deletions as ``.wh.<name>`` whiteouts, a directory whose lower content was
replaced entirely (none of its lower names is left, it has new ones) as one
``.wh..wh..opq`` before its new content. Entries come in sorted path order (byte-wise,
parents first) and each entry's parent directories precede it, so applying
the tar in order (``archive.apply_layer``) onto ``lower`` gives ``upper``.

Two ways to find the changes, as containerd:

* ``upper_is_overlay_upperdir``: ``upper`` is an overlayfs upperdir, which
  already *is* the change set (continuity's ``DiffDirChanges``): a 0:0
  character device is a deletion and ``trusted.overlay.opaque=y`` an opaque
  directory; ``lower`` (the merged parent, or None) is only consulted to skip
  directories that did not change and whiteouts of what never existed. An
  upperdir written with ``redirect_dir`` or ``metacopy`` is refused: it does
  not hold the change set.
* otherwise both trees are walked side by side (continuity's double walk).
  An entry changed if its type, mode, owner, device number, xattrs, size,
  mtime or link target differ. Regular files with equal size and mtime are
  unchanged, except when both mtimes have zero nanoseconds (a tar round trip
  truncates them), where the content is compared. Directories are compared
  without their mtime.

Headers carry numeric owners only, mtimes truncated to seconds, no atime or
ctime; whiteouts have mtime 0 (containerd 2.0). Hard links within the diff are
kept (the first name in order carries the data), sockets are skipped.
Xattrs go in ``SCHILY.xattr.*`` records, except ``trusted.*`` (overlay's own
bookkeeping; never applied from a layer anyway) and ``security.selinux`` (the
label is the host's, not the image's).

The walk is made with directory file descriptors and ``O_NOFOLLOW``, so a
container that planted symlinks in its upper dir cannot make the diff read
files outside it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.snapshots.archive import WHITEOUT_OPAQUE, WHITEOUT_PREFIX
from shared.content import CHUNK_SIZE
from shared.errors import FailedPrecondition, ResourceExhausted, Unimplemented

__all__ = ["CompressedDigestWriter", "Sink", "write_diff"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_OPAQUE_XATTR = "trusted.overlay.opaque"
_SMALL_FILE = 64 << 10
# An upperdir written with these features does not hold whole files / real paths.
_UNSUPPORTED_OVERLAY = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class CompressedDigestWriter:
    """Gzips a tar into ``sink`` while hashing both sides: the blob digest and the diff ID.

    ``close`` ends the gzip stream (it does not close ``sink``); the digests
    and sizes are final after it.
    """

    def __init__(self, sink: Sink, level: int = 6) -> None:
        self._sink = sink
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip framing, as Go's gzip.Writer
        self._compressed = hashlib.sha256()
        self._uncompressed = hashlib.sha256()
        self.compressed_size = 0
        self.uncompressed_size = 0
        self._closed = False

    def write(self, data: bytes, /) -> int:
        if self._closed:
            raise ValueError("write to a closed CompressedDigestWriter")
        self._uncompressed.update(data)
        self.uncompressed_size += len(data)
        self._emit(self._z.compress(data))
        return len(data)

    def _emit(self, out: bytes) -> None:
        if out:
            self._compressed.update(out)
            self.compressed_size += len(out)
            self._sink.write(out)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit(self._z.flush())

    @property
    def compressed_digest(self) -> str:
        return f"sha256:{self._compressed.hexdigest()}"

    @property
    def uncompressed_digest(self) -> str:
        return f"sha256:{self._uncompressed.hexdigest()}"


# ---------------------------------------------------------------------------
# Tar headers, written by hand: ustar with a PAX header when a value does not fit,
# the shape Go's tar.Writer gives (tarfile costs ~50 us an entry, this ~5).

_REG, _LINK, _SYMLINK, _CHAR, _BLOCK, _DIR, _FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")


def _numeric(key: bytes, value: int, width: int, records: list[bytes]) -> bytes:
    """A ``width``-byte octal field; a value that does not fit goes to a PAX record (field 0)."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\x00" % (width - 1, value)
    records.append(_pax_record(key, b"%d" % value))
    return b"%0*o\x00" % (width - 1, 0)


def _device(value: int) -> bytes:
    """devmajor/devminor: octal, or GNU base-256 past 7 digits (PAX has no record for them)."""
    if value < 8**7:
        return b"%07o\x00" % value
    return bytes([0x80]) + value.to_bytes(7, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(body) + len(str(n)) != n:
        n = len(body) + len(str(n))
    return str(n).encode() + body


def _block(
    name: bytes,
    kind: bytes,
    mode: int,
    uid: bytes,
    gid: bytes,
    size: bytes,
    mtime: bytes,
    link: bytes,
    major: bytes,
    minor: bytes,
) -> bytes:
    fields = [name, b"%07o\x00" % mode, uid, gid, size, mtime, b" " * 8, kind, link]
    fields += [b"ustar\x00", b"00", b"", b"", major, minor, b""]
    block = bytearray(_USTAR.pack(*fields))
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _encode(
    path: str,
    kind: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    link: str = "",
    major: int = 0,
    minor: int = 0,
    xattrs: dict[str, bytes] | None = None,
) -> bytes:
    name, linkname = os.fsencode(path), os.fsencode(link)
    records: list[bytes] = []
    if len(name) > 100:
        records.append(_pax_record(b"path", name))
    if len(linkname) > 100:
        records.append(_pax_record(b"linkpath", linkname))
    uid_f = _numeric(b"uid", uid, 8, records)
    gid_f = _numeric(b"gid", gid, 8, records)
    size_f = _numeric(b"size", size, 12, records)
    mtime_f = _numeric(b"mtime", mtime, 12, records)
    for key, value in sorted((xattrs or {}).items()):
        records.append(_pax_record(b"SCHILY.xattr." + os.fsencode(key), value))
    header = _block(
        name[:100],
        kind,
        mode,
        uid_f,
        gid_f,
        size_f,
        mtime_f,
        linkname[:100],
        _device(major),
        _device(minor),
    )
    if not records:
        return header
    data = b"".join(records)
    pax = _block(
        b"PaxHeaders.0/" + name.rstrip(b"/").rpartition(b"/")[2][:87],
        b"x",
        0o644,
        b"%07o\x00" % 0,
        b"%07o\x00" % 0,
        b"%011o\x00" % len(data),
        mtime_f,
        b"",
        b"%07o\x00" % 0,
        b"%07o\x00" % 0,
    )
    return pax + data + bytes(-len(data) % 512) + header


# ---------------------------------------------------------------------------


@dataclass
class _Node:
    name: str  # in its directory
    st: os.stat_result
    _xattrs: dict[str, bytes] | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


@dataclass
class _Frame:
    """A directory being walked: its path, descriptors and whether its header went out."""

    path: str
    ufd: int
    lfd: int | None
    node: _Node | None
    emitted: bool
    children: list[str] = field(default_factory=list)
    upper: dict[str, _Node] = field(default_factory=dict)
    lower: dict[str, _Node] = field(default_factory=dict)


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _xattrs(dir_fd: int, node: _Node, fd: int | None = None) -> dict[str, bytes]:
    """The node's xattrs (cached), read through ``fd`` when it is open, else without following."""
    if node._xattrs is None:
        target: int | str = fd if fd is not None else f"/proc/self/fd/{dir_fd}/{node.name}"
        follow = isinstance(target, int)  # an fd: no path to follow
        try:
            keys = os.listxattr(target, follow_symlinks=follow)
        except OSError as e:
            if e.errno != errno.ENOTSUP:
                raise
            keys = []
        node._xattrs = {}
        for key in sorted(keys):
            try:
                node._xattrs[key] = os.getxattr(target, key, follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                    raise
    return node._xattrs


def _layer_xattrs(xattrs: dict[str, bytes]) -> dict[str, bytes]:
    return {
        k: v for k, v in xattrs.items() if not k.startswith("trusted.") and k != "security.selinux"
    }


def _listing(fd: int) -> dict[str, _Node]:
    with os.scandir(fd) as it:
        return {e.name: _Node(e.name, e.stat(follow_symlinks=False)) for e in it}


def _same_content(ufd: int, lfd: int, name: str) -> bool:
    a = os.open(name, _FILE_FLAGS, dir_fd=ufd)
    try:
        b = os.open(name, _FILE_FLAGS, dir_fd=lfd)
        try:
            while True:
                x, y = os.read(a, CHUNK_SIZE), os.read(b, CHUNK_SIZE)
                if x != y:
                    return False
                if not x:
                    return True
        finally:
            os.close(b)
    finally:
        os.close(a)


class _Walker:
    def __init__(self, out: Sink, overlay: bool, has_lower: bool) -> None:
        self._out = out
        self._overlay = overlay
        self._has_lower = has_lower
        self.written = 0
        self._stack: list[_Frame] = []
        self._inode_src: dict[tuple[int, int], str] = {}
        # unmodified names of a hard-linked inode, with the parent dirs they need
        self._inode_refs: dict[tuple[int, int], list[tuple[str, _Node, list[_Frame]]]] = {}

    # -- the walk

    def run(self, upper_fd: int, lower_fd: int | None) -> None:
        self._push("", upper_fd, lower_fd, None, emitted=True)
        while self._stack:
            frame = self._stack[-1]
            if not frame.children:
                self._stack.pop()
                if frame.path:
                    os.close(frame.ufd)
                    if frame.lfd is not None:
                        os.close(frame.lfd)
                continue
            name = frame.children.pop()
            if self._overlay:
                self._overlay_entry(frame, name)
            else:
                self._compare_entry(frame, name)

    def _push(
        self, path: str, ufd: int, lfd: int | None, node: _Node | None, emitted: bool
    ) -> None:
        frame = _Frame(path, ufd, lfd, node, emitted)
        self._stack.append(frame)
        frame.upper = _listing(ufd)
        if lfd is not None and not self._overlay:
            frame.lower = _listing(lfd)
            if frame.lower and frame.upper and frame.upper.keys().isdisjoint(frame.lower.keys()):
                # the content was replaced entirely: one opaque marker instead of whiteouts
                self._whiteout(_join(path, WHITEOUT_OPAQUE))
                frame.lower = {}
        names = frame.upper.keys() | frame.lower.keys()
        frame.children = sorted(names, key=os.fsencode, reverse=True)  # popped from the end

    def _descend(self, frame: _Frame, node: _Node, lower_dir: bool, emitted: bool) -> None:
        path = _join(frame.path, node.name)
        _xattrs(frame.ufd, node)  # cached now: the header may be written after this fd is gone
        ufd = os.open(node.name, _DIR_FLAGS, dir_fd=frame.ufd)
        lfd = None
        if lower_dir and frame.lfd is not None:
            try:
                lfd = os.open(node.name, _DIR_FLAGS, dir_fd=frame.lfd)
            except OSError:
                os.close(ufd)
                raise
        self._push(path, ufd, lfd, node, emitted)

    def _lower_node(self, frame: _Frame, name: str) -> _Node | None:
        if frame.lfd is None:
            return None
        try:
            return _Node(name, os.stat(name, dir_fd=frame.lfd, follow_symlinks=False))
        except FileNotFoundError:
            return None

    def _overlay_entry(self, frame: _Frame, name: str) -> None:
        u = frame.upper[name]
        path = _join(frame.path, name)
        mode = u.st.st_mode
        x = _xattrs(frame.ufd, u)
        for key in _UNSUPPORTED_OVERLAY:
            if key in x:
                raise Unimplemented(f"{path}: overlay upperdir uses {key}; mount without it")
        if stat.S_ISCHR(mode) and u.st.st_rdev == 0:  # overlay whiteout
            if not self._has_lower or self._lower_node(frame, name) is not None:
                self._whiteout(_join(frame.path, WHITEOUT_PREFIX + name))
            return
        low = self._lower_node(frame, name)
        if not stat.S_ISDIR(mode):
            self._add(frame, u)
            return
        opaque = x.get(_OPAQUE_XATTR) == b"y"
        lower_is_dir = low is not None and low.is_dir
        emitted = False
        if opaque and (lower_is_dir or not self._has_lower):
            self._add(frame, u)
            self._whiteout(_join(path, WHITEOUT_OPAQUE))
            emitted = True
        elif not (lower_is_dir and self._same_dir(frame, u, low)):
            self._add(frame, u)
            emitted = True
        self._descend(frame, u, lower_is_dir and not opaque, emitted)

    def _same_dir(self, frame: _Frame, u: _Node, low: _Node | None) -> bool:
        if low is None or frame.lfd is None:
            return False
        a, b = u.st, low.st
        return (
            a.st_mode == b.st_mode
            and a.st_uid == b.st_uid
            and a.st_gid == b.st_gid
            and (not self._overlay or a.st_mtime_ns == b.st_mtime_ns)
            and _layer_xattrs(_xattrs(frame.ufd, u)) == _layer_xattrs(_xattrs(frame.lfd, low))
        )

    def _compare_entry(self, frame: _Frame, name: str) -> None:
        u, low = frame.upper.get(name), frame.lower.get(name)
        if u is None:
            self._whiteout(_join(frame.path, WHITEOUT_PREFIX + name))
            return
        if stat.S_ISSOCK(u.st.st_mode):
            return
        if low is None:
            self._add(frame, u)
            if u.is_dir:
                self._descend(frame, u, False, True)
            return
        if u.is_dir and low.is_dir:
            same = self._same_dir(frame, u, low)
            if not same:
                self._add(frame, u)
            self._descend(frame, u, True, not same)
            return
        if not u.is_dir and not low.is_dir and self._same_file(frame, u, low):
            if u.st.st_nlink > 1:
                self._add(frame, u, unmodified=True)
            return
        self._add(frame, u)
        if u.is_dir:
            self._descend(frame, u, False, True)

    def _same_file(self, frame: _Frame, u: _Node, low: _Node) -> bool:
        assert frame.lfd is not None
        a, b = u.st, low.st
        if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev, a.st_size) != (
            b.st_mode,
            b.st_uid,
            b.st_gid,
            b.st_rdev,
            b.st_size,
        ):
            return False
        if _layer_xattrs(_xattrs(frame.ufd, u)) != _layer_xattrs(_xattrs(frame.lfd, low)):
            return False
        if stat.S_ISLNK(a.st_mode) and os.readlink(u.name, dir_fd=frame.ufd) != os.readlink(
            low.name, dir_fd=frame.lfd
        ):
            return False
        ta, tb = a.st_mtime_ns, b.st_mtime_ns
        if ta // 1_000_000_000 != tb // 1_000_000_000:
            return False
        if ta % 1_000_000_000 == 0 and tb % 1_000_000_000 == 0:
            # both may have been truncated by a tar round trip: look at the bytes
            if stat.S_ISREG(a.st_mode) and a.st_size > 0:
                return _same_content(frame.ufd, frame.lfd, u.name)
            return True
        return ta == tb

    # -- output

    def _emit_parents(self, stack: list[_Frame]) -> None:
        for f in stack:
            if not f.emitted and f.node is not None:
                f.emitted = True
                self._header(f.path, f.node, -1)  # a directory: no fd needed, xattrs cached

    def _whiteout(self, path: str) -> None:
        self._emit_parents(self._stack)
        self._write(_encode(path, _REG, 0, 0, 0, 0, 0))

    def _add(self, frame: _Frame, node: _Node, unmodified: bool = False) -> None:
        path = _join(frame.path, node.name)
        st = node.st
        if stat.S_ISSOCK(st.st_mode):
            return
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            source = self._inode_src.get(key)
            if source is not None:
                self._emit_parents(self._stack)
                self._header(path, node, frame.ufd, link_to=source)
                return
            if unmodified:
                _xattrs(frame.ufd, node)  # cached: written later, when this fd may be gone
                self._inode_refs.setdefault(key, []).append((path, node, list(self._stack)))
                return
            self._inode_src[key] = path
            self._emit_parents(self._stack)
            self._header(path, node, frame.ufd)
            for extra, extra_node, stack in self._inode_refs.pop(key, []):
                self._emit_parents(stack)
                self._header(extra, extra_node, -1, link_to=path)
            return
        self._emit_parents(self._stack)
        self._header(path, node, frame.ufd)

    def _header(self, path: str, node: _Node, dir_fd: int, link_to: str | None = None) -> None:
        """One entry; ``link_to``: as a hard link to that name, with the same metadata (Go's)."""
        st = node.st
        mode = st.st_mode
        fd = None
        size, link, major, minor = 0, "", 0, 0
        if link_to is not None:
            kind, link = _LINK, link_to
        elif stat.S_ISREG(mode):
            fd = os.open(node.name, _FILE_FLAGS, dir_fd=dir_fd)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise FailedPrecondition(f"{path}: changed while the diff was written")
            kind, size = _REG, st.st_size
        elif stat.S_ISDIR(mode):
            kind, path = _DIR, path + "/"
        elif stat.S_ISLNK(mode):
            kind, link = _SYMLINK, os.readlink(node.name, dir_fd=dir_fd)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = _CHAR if stat.S_ISCHR(mode) else _BLOCK
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            kind = _FIFO
        try:
            xattrs = _layer_xattrs(_xattrs(dir_fd, node, fd))
            header = _encode(
                path,
                kind,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                size,
                st.st_mtime_ns // 1_000_000_000,  # truncated, as containerd
                link,
                major,
                minor,
                xattrs,
            )
            if fd is not None and size <= _SMALL_FILE:  # one write for header, data, padding
                data = os.read(fd, size)
                if len(data) != size:
                    raise FailedPrecondition(f"{path}: shrank while the diff was written")
                self._write(header + data + bytes(-size % 512))
            else:
                self._write(header)
                if fd is not None:
                    self._copy(fd, size, path)
        finally:
            if fd is not None:
                os.close(fd)

    def _copy(self, fd: int, size: int, path: str) -> None:
        left = size
        while left:
            data = os.read(fd, min(CHUNK_SIZE, left))
            if not data:
                raise FailedPrecondition(f"{path}: shrank while the diff was written")
            self._write(data)
            left -= len(data)
        if size % 512:
            self._write(bytes(512 - size % 512))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.written += len(data)


def write_diff(
    lower: Path | None, upper: Path, out: Sink, *, upper_is_overlay_upperdir: bool
) -> int:
    """Write the changes from ``lower`` to ``upper`` as a tar into ``out``; the bytes written.

    ``lower`` None means "from nothing" (every entry of ``upper`` is new); with
    an overlay upperdir it means the lower trees are not at hand, and every
    whiteout and opaque directory is written out as such.
    """
    upper_fd = os.open(upper, _DIR_FLAGS)
    lower_fd = None
    try:
        if lower is not None:
            lower_fd = os.open(lower, _DIR_FLAGS)
        walker = _Walker(out, upper_is_overlay_upperdir, lower is not None)
        try:
            walker.run(upper_fd, lower_fd)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE):
                raise ResourceExhausted(f"diff of {upper}: {e.strerror}") from e
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                what = f"diff of {upper}: changed while it was written ({e.strerror})"
                raise FailedPrecondition(what) from e
            raise
        finally:
            for frame in walker._stack[1:]:
                os.close(frame.ufd)
                if frame.lfd is not None:
                    os.close(frame.lfd)
        walker._write(bytes(1024))  # end of archive: two zero blocks, as Go's tar.Writer
        return walker.written
    finally:
        os.close(upper_fd)
        if lower_fd is not None:
            os.close(lower_fd)
