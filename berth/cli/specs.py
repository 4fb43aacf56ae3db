"""The flags ``run`` and ``containers create`` share, and the container they make.

The record is the one ``ctr run`` makes: containerd's default spec with the default
Unix devices, the image's config, its config labels and stop signal, a new snapshot
(a view with ``--read-only``), then the user's flags in ctr's order.
"""

from __future__ import annotations

import functools
import json
import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from berth.cli import complete
from berth.cli.core import EXIT_USAGE, fail, iter_lines, parse_pairs
from berth.cli.session import window_size

if TYPE_CHECKING:
    import berth
    from berth import oci

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes: ``67108864``, ``64m``, ``64MiB``, ``1.5G`` (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        fail(f"invalid size {text!r}: want bytes, or a number with k, m, g or t", EXIT_USAGE)
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def parse_mount(text: str) -> dict[str, Any]:
    """``type=bind,src=/tmp,dst=/host,options=rbind:ro`` as an OCI mount (ctr's syntax)."""
    fields = parse_pairs(text.split(","), "mount field")
    mount: dict[str, Any] = {"type": "bind", "options": []}
    for key, value in fields.items():
        if key == "type":
            mount["type"] = value
        elif key in ("source", "src"):
            mount["source"] = value
        elif key in ("destination", "dst", "target"):
            mount["destination"] = value
        elif key == "options":
            mount["options"] = [o for o in value.split(":") if o]
        else:
            fail(f"invalid mount {text!r}: unknown field {key!r}", EXIT_USAGE)
    if "destination" not in mount:
        fail(f"invalid mount {text!r}: it needs dst=<path in the container>", EXIT_USAGE)
    if mount["type"] == "bind" and not mount["options"]:
        mount["options"] = ["rbind"]
    return mount


def read_env_files(paths: Sequence[str]) -> list[str]:
    env: list[str] = []
    for path in paths:
        env.extend(iter_lines(Path(path).read_text()))
    return env


def container_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The flags of a container's making, as ``ctr run`` / ``ctr containers create``."""
    options = [
        click.option("--snapshotter", envvar="BERTH_SNAPSHOTTER", default="",
                     help="Snapshotter for the root filesystem (default: the namespace's)."),
        click.option("--snapshotter-label", multiple=True, metavar="KEY=VALUE",
                     help="Label of the container's new snapshot."),
        click.option("--config", "-c", "spec_file", type=click.Path(dir_okay=False),
                     help="A whole OCI spec (config.json) instead of the image's."),
        click.option("--rootfs", is_flag=True,
                     help="IMAGE is a directory to use as the root filesystem."),
        click.option("--platform", default="", help="Run the image for this platform."),
        click.option("--cwd", default="", help="Working directory of the process."),
        click.option("--env", "-e", multiple=True, metavar="KEY=VALUE",
                     help="Environment variable (repeatable)."),
        click.option("--env-file", multiple=True, type=click.Path(dir_okay=False, exists=True),
                     help="File of KEY=VALUE lines (repeatable)."),
        click.option("--label", multiple=True, metavar="KEY=VALUE", help="Container label."),
        click.option("--annotation", multiple=True, metavar="KEY=VALUE",
                     help="OCI annotation."),
        click.option("--mount", multiple=True, metavar="SPEC",
                     help="Mount, e.g. type=bind,src=/tmp,dst=/host,options=rbind:ro."),
        click.option("--net-host", is_flag=True, help="Use the host's network."),
        click.option("--privileged", is_flag=True,
                     help="Every capability and host device, no masked paths."),
        click.option("--read-only", is_flag=True, help="Read-only root filesystem."),
        click.option("--runtime", default="",
                     help="Runtime (default: the namespace's, io.containerd.runc.v2)."),
        click.option("--runc-binary", default="", help="runc-compatible binary (crun)."),
        click.option("--runc-root", default="", help="State root of that binary."),
        click.option("--runc-systemd-cgroup", is_flag=True,
                     help="Let the binary use systemd's cgroup driver."),
        click.option("--tty", "-t", is_flag=True, help="Give the process a terminal."),
        click.option("--user", "-u", default="", help="User (name, uid, uid:gid, name:group)."),
        click.option("--hostname", default="", help="The container's hostname."),
        click.option("--with-ns", multiple=True, metavar="TYPE:PATH",
                     help="Join an existing namespace, e.g. network:/proc/42/ns/net."),
        click.option("--cgroup", default=None, help="cgroup path (default /<namespace>/<id>)."),
        click.option("--allow-new-privs", is_flag=True, help="Turn off no_new_privileges."),
        click.option("--memory-limit", default="", help="Memory limit: bytes, or 64m, 1g..."),
        click.option("--cpus", type=float, default=0.0, help="CPU quota in CPUs (1.5)."),
        click.option("--cpu-shares", type=int, default=0, help="CPU shares."),
        click.option("--pids-limit", type=int, default=0, help="Most processes at once."),
        click.option("--cap-add", multiple=True, help="Add a capability (CAP_NET_ADMIN)."),
        click.option("--cap-drop", multiple=True, help="Drop a capability."),
        click.option("--seccomp", is_flag=True,
                     help="Filter system calls with the default seccomp profile."),
        click.option("--seccomp-profile", default="", type=click.Path(dir_okay=False),
                     help="Filter system calls with this seccomp profile (OCI JSON)."),
    ]  # fmt: skip
    return functools.reduce(lambda g, option: option(g), reversed(options), f)


def image_argument(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("image", shell_complete=complete.images)(f)


def _spec_options(flags: dict[str, Any], args: Sequence[str]) -> list[oci.SpecOpt]:
    from berth import oci

    opts: list[oci.SpecOpt] = []
    if flags["read_only"]:
        opts.append(oci.with_rootfs_readonly)
    if args:
        opts.append(oci.with_process_args(*args))
    env = [*read_env_files(flags["env_file"]), *flags["env"]]
    if env:
        opts.append(oci.with_env(env))
    if flags["mount"]:
        opts.append(oci.with_mounts([parse_mount(m) for m in flags["mount"]]))
    if flags["cwd"]:
        opts.append(oci.with_process_cwd(flags["cwd"]))
    if flags["tty"]:
        opts.append(oci.with_tty)
        # The size from the start: a resize after the start may come after the first read.
        size = window_size()
        if size is not None:
            opts.append(oci.with_tty_size(*size))
    if flags["privileged"]:
        opts += [oci.with_privileged, oci.with_all_devices_allowed, oci.with_host_devices]
    if flags["net_host"]:
        opts.append(oci.with_host_network)
        if not flags["hostname"]:
            opts.append(oci.with_hostname(socket.gethostname()))
    if flags["hostname"]:
        opts.append(oci.with_hostname(flags["hostname"]))
    for joined in flags["with_ns"]:
        kind, _, path = joined.partition(":")
        if not kind or not path:
            fail(f"invalid --with-ns {joined!r}: want <type>:<path>", EXIT_USAGE)
        opts.append(oci.with_linux_namespace(kind, path))
    if flags["cgroup"] is not None:
        opts.append(oci.with_cgroup(flags["cgroup"]))
    if flags["allow_new_privs"]:
        opts.append(oci.with_new_privileges)
    if flags["memory_limit"]:
        opts.append(oci.with_memory_limit(parse_size(flags["memory_limit"])))
    if flags["cpus"]:
        opts.append(oci.with_cpus(flags["cpus"]))
    if flags["cpu_shares"]:
        opts.append(oci.with_cpu_shares(flags["cpu_shares"]))
    if flags["pids_limit"]:
        opts.append(oci.with_pids_limit(flags["pids_limit"]))
    if flags["cap_add"]:
        opts.append(oci.with_added_capabilities(flags["cap_add"]))
    if flags["cap_drop"]:
        opts.append(oci.with_dropped_capabilities(flags["cap_drop"]))
    if flags["user"]:
        opts.append(oci.with_user(flags["user"]))
    if flags["annotation"]:
        opts.append(oci.with_annotations(parse_pairs(flags["annotation"], "annotation")))
    # Last: the default profile depends on the capabilities set above.
    if flags["seccomp_profile"]:
        opts.append(oci.with_seccomp_profile_file(flags["seccomp_profile"]))
    elif flags["seccomp"]:
        opts.append(oci.with_default_seccomp)
    return opts


def create_container(
    client: berth.Client,
    container_id: str,
    image_ref: str,
    args: Sequence[str],
    flags: dict[str, Any],
) -> berth.Container:
    """Make the container as ``ctr run`` does; the image must be there already."""
    import berth
    from berth import oci

    labels = parse_pairs(flags["label"], "label")
    runtime_options = None
    if flags["runc_binary"] or flags["runc_root"] or flags["runc_systemd_cgroup"]:
        runtime_options = berth.runc_options(
            binary_name=flags["runc_binary"],
            root=flags["runc_root"],
            systemd_cgroup=flags["runc_systemd_cgroup"],
        )
    runtime = flags["runtime"] or None
    user_opts = _spec_options(flags, args)
    if flags["spec_file"]:
        spec = berth.with_spec(_read_spec(flags["spec_file"]), *user_opts)
        return client.new_container(
            container_id, spec=spec, runtime=runtime, runtime_options=runtime_options,
            labels=labels,
        )  # fmt: skip
    base = [oci.with_default_unix_devices]
    if flags["rootfs"]:
        spec = berth.with_new_spec(*base, oci.with_root_path(image_ref), *user_opts)
        return client.new_container(
            container_id, spec=spec, runtime=runtime, runtime_options=runtime_options,
            labels=labels,
        )  # fmt: skip
    image = find_image(client, image_ref, flags["platform"])
    snapshotter = flags["snapshotter"] or client.default_snapshotter()
    snapshot_labels = parse_pairs(flags["snapshotter_label"], "snapshot label")
    new_snapshot = berth.with_new_snapshot_view if flags["read_only"] else berth.with_new_snapshot
    return client.new_container(
        container_id,
        berth.with_image_config_labels(image),
        berth.with_container_labels(labels),
        berth.with_image_stop_signal(image),
        image=image,
        snapshotter=snapshotter,
        runtime=runtime,
        runtime_options=runtime_options,
        snapshot=new_snapshot(container_id, image, labels=snapshot_labels or None),
        spec=berth.with_new_spec(*base, oci.with_image_config(image), *user_opts),
    )


def find_image(client: berth.Client, ref: str, platform: str = "") -> berth.Image:
    """The image ``ref`` of the namespace, for ``platform`` if given."""
    import berth

    try:
        image = client.get_image(ref)
    except berth.NotFound:
        fail(f'image "{ref}": not found in namespace "{client.namespace}" (pull or import it)')
    if platform:
        from berth import Platform

        parts = platform.split("/")
        image.platform = Platform(*parts) if len(parts) in (2, 3) else image.platform
    return image


def _read_spec(path: str) -> dict[str, Any]:

    try:
        spec = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        fail(f"{path}: not a JSON spec: {e}", EXIT_USAGE)
    if not isinstance(spec, dict):
        fail(f"{path}: not a JSON spec", EXIT_USAGE)
    return spec
