"""Mounting what a snapshotter returns.

The suite never mounts anything on a caller's behalf: ``prepare``, ``view`` and
``mounts`` of a snapshotter return :class:`Mount` records (containerd's
``mount.Mount``), and the caller mounts them where it wants, as root::

    mounts = client.snapshot_service().view("look", image.chain_id())
    berth.mount.mount_all(mounts, "/mnt/look")
    ...
    berth.mount.unmount_all("/mnt/look")
"""

from __future__ import annotations

from collections.abc import Sequence

from shared import mount as _mount
from shared.snapshots import Mount

__all__ = ["Mount", "command", "mount_all", "unmount_all"]


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Mount ``mounts`` one over the other at ``target`` (an existing directory)."""
    _mount.mount_all(mounts, target)


def unmount_all(target: str) -> None:
    """Unmount everything stacked at ``target``; nothing mounted there is no error."""
    _mount.unmount_all(target)


def command(m: Mount, target: str) -> str:
    """The ``mount`` command line that mounts ``m`` at ``target`` (``ctr snapshots mounts``)."""
    options = f" -o {','.join(m.options)}" if m.options else ""
    return f"mount -t {m.type} {m.source} {target}{options}"
