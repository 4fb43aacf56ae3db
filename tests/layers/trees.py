"""Test helpers: compare directory trees, mount overlayfs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# xattrs that are the filesystem's bookkeeping, not content
_IGNORED_XATTRS = ("trusted.overlay.", "security.selinux")


def _xattrs(path: str) -> dict[str, bytes]:
    out = {}
    for key in sorted(os.listxattr(path, follow_symlinks=False)):
        if not key.startswith(_IGNORED_XATTRS):
            out[key] = os.getxattr(path, key, follow_symlinks=False)
    return out


def describe(path: str, mtime: bool = True) -> dict[str, Any]:
    st = os.lstat(path)
    d: dict[str, Any] = {
        "type": stat.S_IFMT(st.st_mode),
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "owner": (st.st_uid, st.st_gid),
        "xattrs": _xattrs(path),
    }
    if stat.S_ISREG(st.st_mode):
        d["size"] = st.st_size
        d["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        d["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        d["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if mtime and not stat.S_ISDIR(st.st_mode):
        d["mtime"] = st.st_mtime_ns // 1_000_000_000
    return d


def snapshot(
    root: Path, *, exclude: tuple[str, ...] = (), mtime: bool = True, nlink: bool = False
) -> dict[str, dict[str, Any]]:
    """Every entry under ``root`` (not ``root`` itself) by relative path; sockets left out."""
    out: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in exclude]
            filenames = [f for f in filenames if f not in exclude]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, name))
            out[rel] = describe(path, mtime)
            if nlink:
                out[rel]["nlink"] = st.st_nlink
                out[rel]["mtime_ns"] = st.st_mtime_ns
    return out


def link_groups(root: Path) -> set[frozenset[str]]:
    """Names that share an inode, for every inode with more than one name."""
    groups: dict[tuple[int, int], set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                groups.setdefault(key, set()).add(os.path.relpath(path, root))
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@contextlib.contextmanager
def overlay(lowers: list[Path], upper: Path, work: Path, target: Path) -> Iterator[Path]:
    """A real overlayfs mount, always unmounted."""
    for p in (upper, work, target):
        p.mkdir(parents=True, exist_ok=True)
    lowerdir = ":".join(str(p) for p in lowers)
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
