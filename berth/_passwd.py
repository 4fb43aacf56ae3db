"""Users and groups of a root filesystem (``/etc/passwd``, ``/etc/group``), for spec options.

The files are found inside the root as the container would see them: symbolic
links are followed but never out of the root (an image's ``/etc/passwd ->
/../../etc/passwd`` stays in the image).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.errors import InvalidArgument, NotFound

MAX_LINKS = 255


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]


def in_root(root: Path, path: str) -> Path:
    """``path`` resolved inside ``root``, symlinks included, never leaving it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > MAX_LINKS:
                raise InvalidArgument(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _lines(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def users(root: Path) -> list[User]:
    """Entries of ``/etc/passwd``; FileNotFoundError when the image has none."""
    found = []
    for f in _lines(in_root(root, "/etc/passwd")):
        f += [""] * (4 - len(f))
        found.append(User(f[0], _int(f[2]), _int(f[3])))
    return found


def groups(root: Path) -> list[Group]:
    """Entries of ``/etc/group``; FileNotFoundError when the image has none."""
    found = []
    for f in _lines(in_root(root, "/etc/group")):
        f += [""] * (4 - len(f))
        members = tuple(m for m in f[3].split(",") if m)
        found.append(Group(f[0], _int(f[2]), members))
    return found


def find_user(root: Path, match: Callable[[User], bool]) -> User:
    """The first user matching; NotFound when none does (or there is no passwd file)."""
    try:
        candidates = users(root)
    except FileNotFoundError:
        raise NotFound("no /etc/passwd in the container's root filesystem") from None
    for user in candidates:
        if match(user):
            return user
    raise NotFound("no matching user in /etc/passwd")


def find_group(root: Path, match: Callable[[Group], bool]) -> Group:
    try:
        candidates = groups(root)
    except FileNotFoundError:
        raise NotFound("no /etc/group in the container's root filesystem") from None
    for group in candidates:
        if match(group):
            return group
    raise NotFound("no matching group in /etc/group")
