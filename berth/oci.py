"""OCI runtime specs the way containerd's client makes them (``oci.GenerateSpec``).

A spec is the ``config.json`` runc reads, held as a plain ``dict``. It starts
from containerd's Linux defaults (:func:`default_spec`: pid, ipc, uts, mount
and network namespaces; ``/proc``, ``/dev``, ``/sys`` ... mounts; the default
capability set; masked and read-only ``/proc`` paths; ``RLIMIT_NOFILE`` 1024;
cgroup ``/<namespace>/<id>``) and is shaped by options applied in order::

    spec = berth.with_new_spec(
        oci.with_image_config(image),        # env, entrypoint + cmd, user, working dir
        oci.with_process_args("sh", "-c", "echo hello"),
        oci.with_env({"DEBUG": "1"}),
        oci.with_memory_limit(64 << 20),
    )

An option is any callable ``(SpecContext, Spec) -> None``. Options that look
into the root filesystem (user names in ``/etc/passwd``) mount the
container's snapshot read-only for a moment, as containerd's do, so they need
the snapshot to exist first: give ``snapshot=`` before ``spec=``.

The default spec sets no environment: :func:`with_image_config` brings the
image's (or ``PATH`` when the image has none), :func:`with_default_path_env`
sets ``PATH`` alone. A default ``PATH`` in the base spec would override the
image's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from berth import _linux, _passwd
from shared import mount as mounting
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
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
    for opt in opts:
        opt(context, spec)
    return spec


def compose(*opts: SpecOpt) -> SpecOpt:
    """Several options as one."""

    def opt(context: SpecContext, spec: Spec) -> None:
        apply(context, spec, *opts)

    return opt


def _process(spec: Spec) -> dict[str, Any]:
    return spec.setdefault("process", {})  # type: ignore[no-any-return]


def _linux_section(spec: Spec) -> dict[str, Any]:
    return spec.setdefault("linux", {})  # type: ignore[no-any-return]


def _resources(spec: Spec) -> dict[str, Any]:
    return _linux_section(spec).setdefault("resources", {})  # type: ignore[no-any-return]


def _user(spec: Spec) -> dict[str, Any]:
    return _process(spec).setdefault("user", {"uid": 0, "gid": 0})  # type: ignore[no-any-return]


# -- whole specs -----------------------------------------------------------------


def with_default_spec() -> SpecOpt:
    """Start over from the default spec (use first)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        spec.clear()
        spec.update(default_spec(context.id, context.namespace))

    return opt


def with_spec_from_file(path: str | os.PathLike[str]) -> SpecOpt:
    """Replace the spec with a ``config.json`` file's."""

    def opt(context: SpecContext, spec: Spec) -> None:
        try:
            loaded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot load spec from {os.fspath(path)}: {e}") from e
        spec.clear()
        spec.update(loaded)

    return opt


# -- process -----------------------------------------------------------------------


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


def with_env(env: Iterable[str] | Mapping[str, str]) -> SpecOpt:
    """Set environment variables (``["K=V"]`` or ``{"K": "V"}``); ``"K"`` alone unsets K."""
    entries = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)

    def opt(context: SpecContext, spec: Spec) -> None:
        if entries:
            process = _process(spec)
            process["env"] = merge_env(process.get("env") or [], entries)

    return opt


def with_default_path_env(context: SpecContext, spec: Spec) -> None:
    """Set ``PATH`` to the usual Unix default."""
    process = _process(spec)
    process["env"] = merge_env(process.get("env") or [], [DEFAULT_PATH])


def with_process_args(*args: str) -> SpecOpt:
    """The command to run (replaces the image's entrypoint and cmd)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        _process(spec)["args"] = list(args)

    return opt


def with_process_cwd(cwd: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _process(spec)["cwd"] = cwd

    return opt


def with_tty(context: SpecContext, spec: Spec) -> None:
    """Give the process a terminal (create the task with a terminal IO too)."""
    process = _process(spec)
    process["terminal"] = True
    if "linux" in spec:
        process["env"] = [*(process.get("env") or []), "TERM=xterm"]


def with_tty_size(width: int, height: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _process(spec)["consoleSize"] = {"height": height, "width": width}

    return opt


def with_no_new_privileges(context: SpecContext, spec: Spec) -> None:
    _process(spec)["noNewPrivileges"] = True


def with_new_privileges(context: SpecContext, spec: Spec) -> None:
    """Allow setuid binaries to gain privileges (turns ``noNewPrivileges`` off)."""
    _process(spec)["noNewPrivileges"] = False


def with_rlimit(kind: str, soft: int, hard: int) -> SpecOpt:
    """Set one rlimit (``"RLIMIT_NOFILE"``), replacing any of the same type."""

    def opt(context: SpecContext, spec: Spec) -> None:
        process = _process(spec)
        limits = [r for r in process.get("rlimits") or [] if r.get("type") != kind]
        process["rlimits"] = [*limits, {"type": kind, "hard": hard, "soft": soft}]

    return opt


# -- the image ---------------------------------------------------------------------


def with_image_config(image: ImageConfigSource, args: Iterable[str] | None = None) -> SpecOpt:
    """Take environment, entrypoint + cmd (or ``args`` instead of cmd), working directory
    and user from the image's config (containerd's ``WithImageConfigArgs``). A user given
    by name is looked up in the image's ``/etc/passwd``; supplementary groups come from
    its ``/etc/group``."""
    override = list(args or [])

    def opt(context: SpecContext, spec: Spec) -> None:
        config = image.config().get("config") or {}
        process = _process(spec)
        process["env"] = merge_env(config.get("Env") or [DEFAULT_PATH], process.get("env") or [])
        cmd = override or list(config.get("Cmd") or [])
        process["args"] = [*(config.get("Entrypoint") or []), *cmd]
        process["cwd"] = config.get("WorkingDir") or "/"
        user = config.get("User") or ""
        if user:
            with_user(user)(context, spec)
            with_additional_gids(str(_user(spec)["uid"]))(context, spec)
        else:
            with_additional_gids("root")(context, spec)

    return opt


# -- users -------------------------------------------------------------------------


def _ensure_primary_gid(spec: Spec) -> None:
    # The primary group is always among the additional ones (containerd's fix for
    # GHSA-hmfx-3pcx-653p, so that a process cannot shed its group with setgroups).
    user = _user(spec)
    gids = list(user.get("additionalGids") or [])
    if user.get("gid", 0) not in gids:
        gids.insert(0, user.get("gid", 0))
    user["additionalGids"] = gids


def _numeric(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def with_uid_gid(uid: int, gid: int) -> SpecOpt:
    """Run as ``uid``:``gid``; supplementary groups start over from the primary one
    (:func:`with_additional_gids` adds the user's)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        user = _user(spec)
        user["uid"], user["gid"] = uid, gid
        user["additionalGids"] = []
        _ensure_primary_gid(spec)

    return opt


def with_user_id(uid: int) -> SpecOpt:
    """Run as ``uid``, with its group from the image's ``/etc/passwd`` (0 if not listed)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        with context.rootfs(spec) as root:
            try:
                found = _passwd.find_user(root, lambda u: u.uid == uid)
                gid = found.gid
            except NotFound:
                gid = 0
        with_uid_gid(uid, gid)(context, spec)

    return opt


def with_username(name: str) -> SpecOpt:
    """Run as the user called ``name`` in the image's ``/etc/passwd`` (NotFound if absent)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        with context.rootfs(spec) as root:
            try:
                found = _passwd.find_user(root, lambda u: u.name == name)
            except NotFound as e:
                raise NotFound(f"user {name!r}: {e}") from None
        with_uid_gid(found.uid, found.gid)(context, spec)

    return opt


def with_user(user: str) -> SpecOpt:
    """Run as ``user``: ``name``, ``uid``, ``name:group``, ``uid:gid``, ``uid:group`` or
    ``name:gid``, as the OCI image spec's ``User`` field allows."""
    parts = user.split(":")
    if len(parts) > 2 or not all(parts):
        raise InvalidArgument(f"invalid user {user!r}: want user, uid, user:group or uid:gid")

    def opt(context: SpecContext, spec: Spec) -> None:
        if len(parts) == 1:
            uid = _numeric(parts[0])
            (with_user_id(uid) if uid is not None else with_username(parts[0]))(context, spec)
            return
        uid, gid = _numeric(parts[0]), _numeric(parts[1])
        if uid is None or gid is None:
            with context.rootfs(spec) as root:
                if uid is None:
                    try:
                        uid = _passwd.find_user(root, lambda u: u.name == parts[0]).uid
                    except NotFound as e:
                        raise NotFound(f"user {parts[0]!r}: {e}") from None
                if gid is None:
                    try:
                        gid = _passwd.find_group(root, lambda g: g.name == parts[1]).gid
                    except NotFound as e:
                        raise NotFound(f"group {parts[1]!r}: {e}") from None
        with_uid_gid(uid, gid)(context, spec)

    return opt


def with_additional_gids(user: str) -> SpecOpt:
    """Supplementary groups of ``user`` (a name or uid) from the image's ``/etc/group``."""

    def opt(context: SpecContext, spec: Spec) -> None:
        _user(spec)["additionalGids"] = []
        if not context.has_rootfs(spec):
            # Nothing to read groups from (no snapshot, no absolute root): the primary
            # group alone, where containerd would refuse.
            _ensure_primary_gid(spec)
            return
        with context.rootfs(spec) as root:
            name = user
            uid = _numeric(user)
            try:
                if uid is not None:
                    name = _passwd.find_user(root, lambda u: u.uid == uid).name
                groups = _passwd.groups(root)
            except (NotFound, FileNotFoundError):
                groups = []
        gids = [g.gid for g in groups if g.name != name and name in g.members]
        _user(spec)["additionalGids"] = gids
        _ensure_primary_gid(spec)

    return opt


# -- root filesystem and mounts ----------------------------------------------------


def with_root_path(path: str) -> SpecOpt:
    """Use an existing directory as the root filesystem (no snapshot)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        spec.setdefault("root", {})["path"] = path

    return opt


def with_rootfs_readonly(context: SpecContext, spec: Spec) -> None:
    spec.setdefault("root", {})["readonly"] = True


def bind_mount(source: str, destination: str, *, readonly: bool = False) -> dict[str, Any]:
    """A bind mount in OCI form, for :func:`with_mounts`."""
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "ro" if readonly else "rw"]}  # fmt: skip


def with_mounts(mounts: Iterable[Mapping[str, Any]]) -> SpecOpt:
    """Add mounts (``{"destination", "type", "source", "options"}``, see :func:`bind_mount`)."""
    added = [dict(m) for m in mounts]

    def opt(context: SpecContext, spec: Spec) -> None:
        spec["mounts"] = [*(spec.get("mounts") or []), *added]

    return opt


def without_mounts(*destinations: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        drop = {os.path.normpath(d) for d in destinations}
        spec["mounts"] = [
            m for m in spec.get("mounts") or [] if os.path.normpath(m["destination"]) not in drop
        ]

    return opt


def _host_file(path: str) -> SpecOpt:
    return with_mounts([bind_mount(path, path, readonly=True)])


with_host_hosts_file = _host_file("/etc/hosts")
with_host_resolvconf = _host_file("/etc/resolv.conf")
with_host_localtime = _host_file("/etc/localtime")


def with_dev_shm_size(kb: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        for m in spec.get("mounts") or []:
            if os.path.normpath(m["destination"]) == "/dev/shm" and m.get("type") == "tmpfs":
                options = [o for o in m.get("options") or [] if not o.startswith("size=")]
                m["options"] = [*options, f"size={kb}k"]
                return
        raise NotFound("no /dev/shm mount in the spec")

    return opt


# -- namespaces, hostname ------------------------------------------------------------


def with_hostname(name: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        spec["hostname"] = name

    return opt


def with_host_namespace(kind: str) -> SpecOpt:
    """Share the host's namespace of ``kind`` (``network``, ``pid``, ``ipc`` ...)."""
    if kind not in NAMESPACES:
        raise InvalidArgument(f"unknown namespace {kind!r}: want one of {', '.join(NAMESPACES)}")

    def opt(context: SpecContext, spec: Spec) -> None:
        linux = _linux_section(spec)
        linux["namespaces"] = [n for n in linux.get("namespaces") or [] if n["type"] != kind]

    return opt


def with_linux_namespace(kind: str, path: str = "") -> SpecOpt:
    """Use a new namespace of ``kind``, or join the one at ``path``."""

    def opt(context: SpecContext, spec: Spec) -> None:
        linux = _linux_section(spec)
        entry = {"type": kind, **({"path": path} if path else {})}
        others = [n for n in linux.get("namespaces") or [] if n["type"] != kind]
        linux["namespaces"] = [*others, entry]

    return opt


def with_host_network(context: SpecContext, spec: Spec) -> None:
    """The host's network, ``/etc/hosts``, ``/etc/resolv.conf`` and ``HOSTNAME``
    (``ctr run --net-host``)."""
    apply(
        context,
        spec,
        with_host_namespace("network"),
        with_host_hosts_file,
        with_host_resolvconf,
        with_env([f"HOSTNAME={socket.gethostname()}"]),
    )


def with_cgroup(path: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _linux_section(spec)["cgroupsPath"] = path

    return opt


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        spec.setdefault("annotations", {}).update(annotations)

    return opt


# -- resources -------------------------------------------------------------------------


def with_memory_limit(limit: int) -> SpecOpt:
    """Memory limit in bytes."""

    def opt(context: SpecContext, spec: Spec) -> None:
        _resources(spec).setdefault("memory", {})["limit"] = limit

    return opt


def with_cpu_shares(shares: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _resources(spec).setdefault("cpu", {})["shares"] = shares

    return opt


def with_cpu_cfs(quota: int, period: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        cpu = _resources(spec).setdefault("cpu", {})
        cpu["quota"], cpu["period"] = quota, period

    return opt


def with_cpus(cpus: float) -> SpecOpt:
    """At most ``cpus`` CPUs' worth of time (``ctr run --cpus``)."""
    return with_cpu_cfs(int(cpus * 100000), 100000)


def with_pids_limit(limit: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _resources(spec)["pids"] = {"limit": limit}

    return opt


# -- privileges and devices --------------------------------------------------------------


def with_capabilities(caps: Iterable[str]) -> SpecOpt:
    names = list(caps)

    def opt(context: SpecContext, spec: Spec) -> None:
        current = _process(spec).setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            current[kind] = list(names)

    return opt


def with_added_capabilities(caps: Iterable[str]) -> SpecOpt:
    names = list(caps)

    def opt(context: SpecContext, spec: Spec) -> None:
        current = _process(spec).setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            have = current.setdefault(kind, [])
            have.extend(c for c in names if c not in have)

    return opt


def with_dropped_capabilities(caps: Iterable[str]) -> SpecOpt:
    names = set(caps)

    def opt(context: SpecContext, spec: Spec) -> None:
        current = _process(spec).setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            current[kind] = [c for c in current.get(kind) or [] if c not in names]

    return opt


def with_all_current_capabilities(context: SpecContext, spec: Spec) -> None:
    """Every capability this process has."""
    with_capabilities(_linux.current_capabilities())(context, spec)


def with_masked_paths(paths: Iterable[str] | None) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _set_or_drop(_linux_section(spec), "maskedPaths", list(paths or []))

    return opt


def with_readonly_paths(paths: Iterable[str] | None) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _set_or_drop(_linux_section(spec), "readonlyPaths", list(paths or []))

    return opt


def _set_or_drop(section: dict[str, Any], key: str, value: Any) -> None:
    if value:
        section[key] = value
    else:
        section.pop(key, None)


def _writable(kind: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        for m in spec.get("mounts") or []:
            if m.get("type") == kind:
                m["options"] = ["rw" if o == "ro" else o for o in m.get("options") or []]

    return opt


with_writeable_sysfs = _writable("sysfs")
with_writeable_cgroupfs = _writable("cgroup")


def with_seccomp_unconfined(context: SpecContext, spec: Spec) -> None:
    _linux_section(spec).pop("seccomp", None)


def with_selinux_label(label: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _set_or_drop(_process(spec), "selinuxLabel", label)

    return opt


def with_apparmor_profile(profile: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        _set_or_drop(_process(spec), "apparmorProfile", profile)

    return opt


def with_all_devices_allowed(context: SpecContext, spec: Spec) -> None:
    """Let the container read, write and create every device node (cgroup rule)."""
    _resources(spec)["devices"] = [{"allow": True, "access": "rwm"}]


def with_default_unix_devices(context: SpecContext, spec: Spec) -> None:
    """Allow the usual device nodes: null, random, full, tty, zero, urandom, console, pts
    and ptmx (``ctr run`` always adds these)."""
    allowed = [(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2)]
    rules = _resources(spec).setdefault("devices", [])
    for major, minor in allowed:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)


def with_host_devices(context: SpecContext, spec: Spec) -> None:
    """Create every device node of the host's ``/dev`` in the container."""
    linux = _linux_section(spec)
    linux["devices"] = [*(linux.get("devices") or []), *_linux.host_devices()]


# The privileges of the host: containerd's ``WithPrivileged``. ``ctr run --privileged``
# adds ``with_all_devices_allowed`` and ``with_host_devices`` to it.
with_privileged = compose(
    with_all_current_capabilities,
    with_masked_paths(None),
    with_readonly_paths(None),
    with_writeable_sysfs,
    with_writeable_cgroupfs,
    with_selinux_label(""),
    with_apparmor_profile(""),
    with_seccomp_unconfined,
)
