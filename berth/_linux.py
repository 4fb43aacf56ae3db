"""What the host has to say to a spec: its capabilities and its device nodes."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

# Capability names by bit number (linux/capability.h), as containerd's pkg/cap knows them.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

# Directories of /dev that hold no devices a container should get (containerd's list).
_SKIP_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def current_capabilities(status: Path = Path("/proc/self/status")) -> list[str]:
    """The effective capabilities of this process, by name, in bit order."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            bits = int(line.split()[1], 16)
            return [name for i, name in enumerate(CAPABILITIES) if bits >> i & 1]
    return []


def device(path: str) -> dict[str, Any] | None:
    """The OCI ``LinuxDevice`` for a device node, or None for anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    else:
        return None
    return {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": st.st_mode & ~stat.S_IFMT(st.st_mode) & 0o7777,
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node under ``root`` (containerd's ``HostDevices``), by name order."""
    found: list[dict[str, Any]] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DIRS:
                found.extend(host_devices(entry.path))
        elif entry.name != "console" and (dev := device(entry.path)) is not None:
            found.append(dev)
    return found
