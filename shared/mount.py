"""Mounting containerd ``Mount`` records (what a snapshotter returns) on this host.

``mount_all(mounts, target)`` does what containerd's ``mount.All`` does: each
record in order at ``target``, options split into mount(2) flags and data,
a read-only bind done as bind + remount, and an overlay ``lowerdir`` list too
long for one page (a deep image: 100+ layers) shortened by mounting from the
layers' common directory with relative paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from shared.errors import FailedPrecondition, InvalidArgument
from shared.snapshots import Mount

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

# option -> (clear?, flag); as containerd's mount_linux.go parseMountOptions.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
_PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_options(options: Sequence[str]) -> tuple[int, int, list[str]]:
    """Split options into (flags, propagation flags, data options)."""
    flags = propagation = 0
    data = []
    for option in options:
        if option in _FLAGS:
            clear, flag = _FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    return flags, propagation, data


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if (
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None)
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(
            err, f"mount {fstype} {source} on {target} ({data or 'no options'}): {os.strerror(err)}"
        )


def _compact_lowerdirs(data: list[str]) -> tuple[list[str], str] | None:
    """Lowerdirs relative to their common directory, and that directory (containerd's trick)."""
    lower = next((d for d in data if d.startswith("lowerdir=")), None)
    if lower is None:
        return None
    dirs = lower.removeprefix("lowerdir=").split(":")
    common = os.path.commonpath(dirs)
    # Each lowerdir is <snapshots>/<id>/fs: step up to the directory that holds the ids.
    while common and any(os.path.relpath(d, common) in (".", "fs") for d in dirs):
        common = os.path.dirname(common)
    relative = ":".join(os.path.relpath(d, common) for d in dirs)
    return [f"lowerdir={relative}" if d is lower else d for d in data], common


def mount(m: Mount, target: str) -> None:
    flags, propagation, data = parse_options(m.options)
    text = ",".join(data)
    if m.type == "overlay" and len(text) >= _PAGE - 1:
        compacted = _compact_lowerdirs(data)
        if compacted is None:
            raise InvalidArgument(f"mount options are longer than a page ({len(text)} bytes)")
        relative, cwd = compacted
        # mount(2) resolves relative paths against the caller's cwd: run mount(8) there.
        result = subprocess.run(
            ["mount", "-t", m.type, "-o", ",".join(relative), m.source, target],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise OSError(errno.EINVAL, f"mount overlay on {target}: {result.stderr.strip()}")
    else:
        fstype = "" if flags & MS_BIND else m.type
        _mount(m.source, target, fstype, flags & ~MS_RDONLY if flags & MS_BIND else flags, text)
        if flags & MS_BIND and flags & MS_RDONLY:
            # A bind mount ignores MS_RDONLY until remounted.
            _mount("", target, "", flags | MS_REMOUNT, "")
    if propagation:
        _mount("", target, "", propagation, "")


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    for m in mounts:
        mount(m, target)


def unmount(target: str, flags: int = 0) -> None:
    """Unmount once; retries a busy target for a moment as containerd does."""
    for attempt in range(50):
        if _libc.umount2(target.encode(), flags) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EBUSY and attempt < 49:
            time.sleep(0.05)
            continue
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def unmount_all(target: str) -> None:
    """Unmount everything stacked at ``target``."""
    while True:
        try:
            unmount(target)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return
            raise


def is_mountpoint(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@contextlib.contextmanager
def temporary(mounts: Sequence[Mount], parent: Path) -> Iterator[Path]:
    """Mount ``mounts`` on a fresh directory under ``parent``; always unmounted after."""
    if not mounts:
        raise FailedPrecondition("no mounts to mount")
    parent.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="mount-", dir=parent))
    try:
        mount_all(mounts, str(target))
        try:
            yield target
        finally:
            unmount_all(str(target))
    finally:
        with contextlib.suppress(OSError):
            target.rmdir()
