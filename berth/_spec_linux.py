"""Spec options for namespaces, resources, privileges and devices."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from berth import _linux
from berth._spec import (
    NAMESPACES,
    Spec,
    SpecContext,
    SpecOpt,
    compose,
    linux_section,
    process_section,
    resources_section,
    set_or_drop,
)
from shared.errors import InvalidArgument

# -- namespaces, hostname ------------------------------------------------------------


def with_host_namespace(kind: str) -> SpecOpt:
    """Share the host's namespace of ``kind`` (``network``, ``pid``, ``ipc`` ...)."""
    if kind not in NAMESPACES:
        raise InvalidArgument(f"unknown namespace {kind!r}: want one of {', '.join(NAMESPACES)}")

    def opt(context: SpecContext, spec: Spec) -> None:
        linux = linux_section(spec)
        linux["namespaces"] = [n for n in linux.get("namespaces") or [] if n["type"] != kind]

    return opt


def with_linux_namespace(kind: str, path: str = "") -> SpecOpt:
    """Use a new namespace of ``kind``, or join the one at ``path``."""

    def opt(context: SpecContext, spec: Spec) -> None:
        linux = linux_section(spec)
        entry = {"type": kind, **({"path": path} if path else {})}
        others = [n for n in linux.get("namespaces") or [] if n["type"] != kind]
        linux["namespaces"] = [*others, entry]

    return opt


def with_cgroup(path: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        linux_section(spec)["cgroupsPath"] = path

    return opt


# -- resources -------------------------------------------------------------------------


def with_memory_limit(limit: int) -> SpecOpt:
    """Memory limit in bytes."""

    def opt(context: SpecContext, spec: Spec) -> None:
        resources_section(spec).setdefault("memory", {})["limit"] = limit

    return opt


def with_cpu_shares(shares: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        resources_section(spec).setdefault("cpu", {})["shares"] = shares

    return opt


def with_cpu_cfs(quota: int, period: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        cpu = resources_section(spec).setdefault("cpu", {})
        cpu["quota"], cpu["period"] = quota, period

    return opt


def with_cpus(cpus: float) -> SpecOpt:
    """At most ``cpus`` CPUs' worth of time (``ctr run --cpus``)."""
    return with_cpu_cfs(int(cpus * 100000), 100000)


def with_pids_limit(limit: int) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        resources_section(spec)["pids"] = {"limit": limit}

    return opt


# -- privileges and devices --------------------------------------------------------------


def with_capabilities(caps: Iterable[str]) -> SpecOpt:
    names = list(caps)

    def opt(context: SpecContext, spec: Spec) -> None:
        current = process_section(spec).setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            current[kind] = list(names)

    return opt


def with_added_capabilities(caps: Iterable[str]) -> SpecOpt:
    names = list(caps)

    def opt(context: SpecContext, spec: Spec) -> None:
        current = process_section(spec).setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            have = current.setdefault(kind, [])
            have.extend(c for c in names if c not in have)

    return opt


def with_dropped_capabilities(caps: Iterable[str]) -> SpecOpt:
    names = set(caps)

    def opt(context: SpecContext, spec: Spec) -> None:
        current = process_section(spec).setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            current[kind] = [c for c in current.get(kind) or [] if c not in names]

    return opt


def with_all_current_capabilities(context: SpecContext, spec: Spec) -> None:
    """Every capability this process has."""
    with_capabilities(_linux.current_capabilities())(context, spec)


def with_masked_paths(paths: Iterable[str] | None) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        set_or_drop(linux_section(spec), "maskedPaths", list(paths or []))

    return opt


def with_readonly_paths(paths: Iterable[str] | None) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        set_or_drop(linux_section(spec), "readonlyPaths", list(paths or []))

    return opt


def _writable(kind: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        for m in spec.get("mounts") or []:
            if m.get("type") == kind:
                m["options"] = ["rw" if o == "ro" else o for o in m.get("options") or []]

    return opt


with_writeable_sysfs = _writable("sysfs")
with_writeable_cgroupfs = _writable("cgroup")


def with_seccomp_unconfined(context: SpecContext, spec: Spec) -> None:
    linux_section(spec).pop("seccomp", None)


def with_selinux_label(label: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        set_or_drop(process_section(spec), "selinuxLabel", label)

    return opt


def with_apparmor_profile(profile: str) -> SpecOpt:
    def opt(context: SpecContext, spec: Spec) -> None:
        set_or_drop(process_section(spec), "apparmorProfile", profile)

    return opt


def with_all_devices_allowed(context: SpecContext, spec: Spec) -> None:
    """Let the container read, write and create every device node (cgroup rule)."""
    resources_section(spec)["devices"] = [{"allow": True, "access": "rwm"}]


def with_default_unix_devices(context: SpecContext, spec: Spec) -> None:
    """Allow the usual device nodes: null, random, full, tty, zero, urandom, console, pts
    and ptmx (``ctr run`` always adds these)."""
    allowed = [(1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2)]
    rules = resources_section(spec).setdefault("devices", [])
    for major, minor in allowed:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)


def with_host_devices(context: SpecContext, spec: Spec) -> None:
    """Create every device node of the host's ``/dev`` in the container."""
    linux = linux_section(spec)
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
