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

import json
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from berth._seccomp import default_profile as default_seccomp_profile
from berth._seccomp import with_default_seccomp, with_seccomp_profile_file
from berth._spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    MASKED_PATHS,
    NAMESPACES,
    OCI_VERSION,
    READONLY_PATHS,
    ImageConfigSource,
    Spec,
    SpecContext,
    SpecOpt,
    apply,
    compose,
    default_mounts,
    default_spec,
    generate_spec,
    merge_env,
    process_section,
)
from berth._spec_linux import (
    with_added_capabilities,
    with_all_current_capabilities,
    with_all_devices_allowed,
    with_apparmor_profile,
    with_capabilities,
    with_cgroup,
    with_cpu_cfs,
    with_cpu_shares,
    with_cpus,
    with_default_unix_devices,
    with_dropped_capabilities,
    with_host_devices,
    with_host_namespace,
    with_linux_namespace,
    with_masked_paths,
    with_memory_limit,
    with_pids_limit,
    with_privileged,
    with_readonly_paths,
    with_seccomp_unconfined,
    with_selinux_label,
    with_writeable_cgroupfs,
    with_writeable_sysfs,
)
from berth._spec_users import (
    with_additional_gids,
    with_image_config,
    with_uid_gid,
    with_user,
    with_user_id,
    with_username,
)
from shared.errors import InvalidArgument, NotFound

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


def with_env(env: Iterable[str] | Mapping[str, str]) -> SpecOpt:
    """Set environment variables (``["K=V"]`` or ``{"K": "V"}``); ``"K"`` alone unsets K."""
    entries = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)

    def opt(context: SpecContext, spec: Spec) -> None:
        if entries:
            process = process_section(spec)
            process["env"] = merge_env(process.get("env") or [], entries)

    return opt


def with_default_path_env(context: SpecContext, spec: Spec) -> None:
    """Set ``PATH`` to the usual Unix default."""
    process = process_section(spec)
    process["env"] = merge_env(process.get("env") or [], [DEFAULT_PATH])


def with_process_args(*args: str) -> SpecOpt:
    """The command to run (replaces the image's entrypoint and cmd)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        process_section(spec)["args"] = list(args)

    return opt


def with_process_cwd(cwd: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        process_section(spec)["cwd"] = cwd

    return opt


def with_tty(context: SpecContext, spec: Spec) -> None:
    """Give the process a terminal (create the task with a terminal IO too)."""
    process = process_section(spec)
    process["terminal"] = True
    if "linux" in spec:
        process["env"] = [*(process.get("env") or []), "TERM=xterm"]


def with_tty_size(width: int, height: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        process_section(spec)["consoleSize"] = {"height": height, "width": width}

    return opt


def with_no_new_privileges(context: SpecContext, spec: Spec) -> None:
    process_section(spec)["noNewPrivileges"] = True


def with_new_privileges(context: SpecContext, spec: Spec) -> None:
    """Allow setuid binaries to gain privileges (turns ``noNewPrivileges`` off)."""
    process_section(spec)["noNewPrivileges"] = False


def with_rlimit(kind: str, soft: int, hard: int) -> SpecOpt:
    """Set one rlimit (``"RLIMIT_NOFILE"``), replacing any of the same type."""

    def opt(context: SpecContext, spec: Spec) -> None:
        process = process_section(spec)
        limits = [r for r in process.get("rlimits") or [] if r.get("type") != kind]
        process["rlimits"] = [*limits, {"type": kind, "hard": hard, "soft": soft}]

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
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", "ro" if readonly else "rw"],
    }


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


def with_hostname(name: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        spec["hostname"] = name

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


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        spec.setdefault("annotations", {}).update(annotations)

    return opt


__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PATH",
    "MASKED_PATHS",
    "NAMESPACES",
    "OCI_VERSION",
    "READONLY_PATHS",
    "ImageConfigSource",
    "Spec",
    "SpecContext",
    "SpecOpt",
    "apply",
    "bind_mount",
    "compose",
    "default_mounts",
    "default_seccomp_profile",
    "default_spec",
    "generate_spec",
    "merge_env",
    "with_added_capabilities",
    "with_additional_gids",
    "with_all_current_capabilities",
    "with_all_devices_allowed",
    "with_annotations",
    "with_apparmor_profile",
    "with_capabilities",
    "with_cgroup",
    "with_cpu_cfs",
    "with_cpu_shares",
    "with_cpus",
    "with_default_path_env",
    "with_default_seccomp",
    "with_default_spec",
    "with_default_unix_devices",
    "with_dev_shm_size",
    "with_dropped_capabilities",
    "with_env",
    "with_host_devices",
    "with_host_hosts_file",
    "with_host_localtime",
    "with_host_namespace",
    "with_host_network",
    "with_host_resolvconf",
    "with_hostname",
    "with_image_config",
    "with_linux_namespace",
    "with_masked_paths",
    "with_memory_limit",
    "with_mounts",
    "with_new_privileges",
    "with_no_new_privileges",
    "with_pids_limit",
    "with_privileged",
    "with_process_args",
    "with_process_cwd",
    "with_readonly_paths",
    "with_rlimit",
    "with_root_path",
    "with_rootfs_readonly",
    "with_seccomp_profile_file",
    "with_seccomp_unconfined",
    "with_selinux_label",
    "with_spec_from_file",
    "with_tty",
    "with_tty_size",
    "with_uid_gid",
    "with_user",
    "with_user_id",
    "with_username",
    "with_writeable_cgroupfs",
    "with_writeable_sysfs",
]
