"""The spec being made and what spec options see: :mod:`berth.oci`'s foundations."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared import mount as mounting
from shared.errors import FailedPrecondition, InvalidArgument
from shared.snapshots import Mount

if TYPE_CHECKING:
    from berth.client import Client

Spec = dict[str, Any]

OCI_VERSION = "1.1.0"  # the runtime-spec version containerd 1.7 writes
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
NAMESPACES = ("pid", "ipc", "uts", "mount", "network", "user", "cgroup", "time")
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class ImageConfigSource(Protocol):
    """What :func:`with_image_config` reads: a :class:`berth.Image` or anything alike."""

    @property
    def name(self) -> str: ...

    def config(self) -> dict[str, Any]: ...


@dataclass
class SpecContext:
    """What a spec option may look at: the container being made, and the client making it.

    ``snapshotter``/``snapshot_key`` name the container's root filesystem when it has
    one; otherwise options that read the root use ``root.path``, which must then be an
    absolute path (:func:`with_root_path`).
    """

    id: str
    namespace: str = "default"
    client: Client | None = None
    snapshotter: str = ""
    snapshot_key: str = ""

    def has_rootfs(self, spec: Spec) -> bool:
        """Whether :meth:`rootfs` can show the root filesystem."""
        if self.snapshotter or self.snapshot_key:
            return True
        return os.path.isabs((spec.get("root") or {}).get("path", ""))

    @contextlib.contextmanager
    def rootfs(self, spec: Spec) -> Iterator[Path]:
        """The container's root filesystem as a directory, for the block's duration."""
        if not self.snapshotter and not self.snapshot_key:
            path = (spec.get("root") or {}).get("path", "")
            if not os.path.isabs(path):
                raise InvalidArgument(
                    "reading the root filesystem needs a snapshot (give snapshot= before "
                    "spec=) or an absolute root path (oci.with_root_path)"
                )
            yield Path(path)
            return
        if not self.snapshotter or not self.snapshot_key or self.client is None:
            raise FailedPrecondition(f"container {self.id}: its snapshot is not set up yet")
        mounts = self.client.snapshot_service(self.snapshotter).mounts(self.snapshot_key)
        if len(mounts) == 1 and mounts[0].type == "overlay":
            # Read-only: unmounting then has nothing to sync (containerd does the same).
            m = mounts[0]
            mounts = [Mount(m.type, m.source, m.target, (*m.options, "ro"))]
        with mounting.temporary(mounts, Path(tempfile.gettempdir())) as root:
            yield root


SpecOpt = Callable[[SpecContext, Spec], None]


def default_spec(container_id: str, namespace: str = "default") -> Spec:
    """containerd's default Linux spec (``populateDefaultUnixSpec``)."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "cgroupsPath": f"/{namespace}/{container_id}",
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def default_mounts() -> list[dict[str, Any]]:
    """containerd's default mounts: proc, dev, devpts, shm, mqueue, sysfs, run."""

    def m(dest: str, kind: str, source: str, *options: str) -> dict[str, Any]:
        return {"destination": dest, "type": kind, "source": source, "options": list(options)}

    return [
        m("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        m("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        m("/dev/pts", "devpts", "devpts",
          "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
        m("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
        m("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        m("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        m("/run", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
    ]  # fmt: skip


def generate_spec(context: SpecContext, *opts: SpecOpt) -> Spec:
    """The default spec for ``context``, shaped by ``opts`` in order."""
    spec = default_spec(context.id, context.namespace)
    apply(context, spec, *opts)
    return spec


def apply(context: SpecContext, spec: Spec, *opts: SpecOpt) -> Spec:
    """Shape an existing ``spec`` with ``opts`` in order; returns it."""
    for opt in opts:
        opt(context, spec)
    return spec


def compose(*opts: SpecOpt) -> SpecOpt:
    """Several options as one."""

    def opt(context: SpecContext, spec: Spec) -> None:
        apply(context, spec, *opts)

    return opt


def process_section(spec: Spec) -> dict[str, Any]:
    return spec.setdefault("process", {})  # type: ignore[no-any-return]


def linux_section(spec: Spec) -> dict[str, Any]:
    return spec.setdefault("linux", {})  # type: ignore[no-any-return]


def resources_section(spec: Spec) -> dict[str, Any]:
    return linux_section(spec).setdefault("resources", {})  # type: ignore[no-any-return]


def user_section(spec: Spec) -> dict[str, Any]:
    return process_section(spec).setdefault("user", {"uid": 0, "gid": 0})  # type: ignore[no-any-return]


def merge_env(defaults: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """``defaults`` with ``overrides`` replacing same-named entries or appended; an override
    without ``=`` removes that name (containerd's ``replaceOrAppendEnvValues``)."""
    result: list[str | None] = []
    where: dict[str, int] = {}
    for entry in defaults:
        where[entry.split("=", 1)[0]] = len(result)
        result.append(entry)
    for entry in overrides:
        key = entry.split("=", 1)[0]
        if "=" not in entry:
            if key in where:
                result[where[key]] = None
            continue
        if key in where:
            result[where[key]] = entry
        else:
            where[key] = len(result)
            result.append(entry)
    return [e for e in result if e is not None]


def set_or_drop(section: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key``, or remove it for an empty value (Go's ``omitempty``)."""
    if value:
        section[key] = value
    else:
        section.pop(key, None)
