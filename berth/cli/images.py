"""``berth images``: pull, push, list, remove, import, export, tag, check, mount, label."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from berth.cli import complete
from berth.cli.core import (
    EXIT_USAGE,
    AliasGroup,
    State,
    each,
    fail,
    interactive,
    pairs_text,
    parse_pairs,
    pass_state,
)
from berth.cli.output import field, format_option, listing, quiet_option, size, timestamp
from berth.cli.progress import TransferView, echo_done

if TYPE_CHECKING:
    import berth

group = AliasGroup("images", help="Manage images: pull, push, import, export, list, tag.")

image_arg = click.argument("ref", shell_complete=complete.images)


def credentials(user: str) -> Callable[[str], tuple[str, str] | None] | None:
    """``--user name[:secret]`` as a credentials callback; the secret is asked for on a
    terminal when not given."""
    if not user:
        return None
    name, sep, secret = user.partition(":")
    if not sep:
        if not sys.stdin.isatty():
            fail("--user without a password needs a terminal to ask for it", EXIT_USAGE)
        secret = click.prompt("Password", hide_input=True, err=True)
    return lambda host: (name, secret)


def user_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--user", "-u", default="", metavar="USER[:PASSWORD]", help="Registry credentials."
    )(f)


def pull_image(
    client: berth.Client,
    ref: str,
    *,
    platform: str = "",
    snapshotter: str = "",
    labels: dict[str, str] | None = None,
    unpack: bool = True,
    user: str = "",
    quiet: bool = False,
) -> berth.Image:
    with TransferView(ref, quiet=quiet) as view:
        image = client.pull(
            ref,
            unpack=unpack,
            platform=platform or None,
            snapshotter=snapshotter or None,
            labels=labels,
            progress=view,
            credentials=credentials(user),
        )
    echo_done(view, f"pulled {image.name} ({image.target.digest})")
    return image


@group.command_with("pull")
@click.argument("ref")
@click.option("--platform", default="", help="Pull for this platform (default: this host's).")
@click.option("--snapshotter", envvar="BERTH_SNAPSHOTTER", default="", help="Unpack into it.")
@click.option("--no-unpack", is_flag=True, help="Fetch the content only.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Label of the image.")
@click.option("--print-chainid", is_flag=True, help="Print the unpacked image's chain ID.")
@click.option("--quiet", "-q", is_flag=True, help="No progress, only the result.")
@user_option
@pass_state
def pull(
    state: State,
    ref: str,
    platform: str,
    snapshotter: str,
    no_unpack: bool,
    label: tuple[str, ...],
    print_chainid: bool,
    quiet: bool,
    user: str,
) -> None:
    """Pull REF from its registry and unpack it, showing each layer as it comes.

    Registry hosts (mirrors, TLS, plain HTTP) are the suite's certs.d configuration; a
    registry on a loopback address with a port is tried over plain HTTP.
    """
    image = pull_image(
        state.client,
        ref,
        platform=platform,
        snapshotter=snapshotter,
        labels=parse_pairs(label),
        unpack=not no_unpack,
        user=user,
        quiet=quiet,
    )
    if quiet:
        click.echo(image.name)
    if print_chainid:
        click.echo(f"image chain ID: {image.chain_id()}")


@group.command_with("push")
@click.argument("remote")
@click.argument("local", required=False, shell_complete=complete.images)
@click.option("--platform", default="", help="Push only this platform's manifest.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@user_option
@pass_state
def push(
    state: State, remote: str, local: str | None, platform: str, quiet: bool, user: str
) -> None:
    """Push the image LOCAL (default: the one named REMOTE) to REMOTE."""
    with TransferView(remote, quiet=quiet) as view:
        state.client.push(
            remote,
            local or remote,
            platform=platform or None,
            progress=view,
            credentials=credentials(user),
        )
    echo_done(view, f"pushed {remote}")


def image_record(image: berth.Image) -> dict[str, Any]:
    import berth

    record: dict[str, Any] = {
        "name": image.name,
        "type": image.target.media_type,
        "digest": image.target.digest,
        "size": None,
        "platforms": [],
        "labels": dict(image.labels),
        "created_at": timestamp(image.created_at),
        "updated_at": timestamp(image.updated_at),
    }
    # What is missing locally (a platform never pulled) leaves a gap, as in ctr.
    with contextlib.suppress(berth.NotFound):
        record["size"] = image.size()
    with contextlib.suppress(berth.NotFound):
        record["platforms"] = [str(p) for p in image.platforms()]
    return record


@group.command_with("ls", "list")
@click.argument("filters", nargs=-1)
@format_option
@quiet_option("image names")
@pass_state
def ls(state: State, filters: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """List images (FILTERS as containerd's: name~=busybox, labels."k"==v)."""
    images = state.client.list_images(*filters)
    records = [{"name": i.name} for i in images] if quiet else [image_record(i) for i in images]
    listing(
        records,
        [
            ("REF", field("name")),
            ("TYPE", field("type")),
            ("DIGEST", field("digest")),
            ("SIZE", lambda r: size(r["size"])),
            ("PLATFORMS", lambda r: ",".join(r["platforms"]) or "-"),
            ("LABELS", lambda r: pairs_text(r["labels"])),
        ],
        fmt,
        quiet=quiet,
        key="name",
    )


@group.command_with("rm", "delete", "del", "remove")
@click.argument("refs", nargs=-1, required=True, shell_complete=complete.images)
@click.option("--sync", is_flag=True, help="Wait until the garbage collection is done.")
@pass_state
def rm(state: State, refs: tuple[str, ...], sync: bool) -> None:
    """Remove images by name; their content goes with the next garbage collection."""

    def remove(ref: str) -> None:
        state.client.delete_image(ref, sync=sync)
        click.echo(ref)

    each(refs, remove)


@group.command_with("import")
@click.argument("archive", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--base-name", default="", help="Name prefix for images the archive names by tag.")
@click.option("--platform", default="", help="Import this platform (default: this host's).")
@click.option("--all-platforms", is_flag=True, help="Import every platform.")
@click.option("--no-unpack", is_flag=True, help="Do not unpack the layers.")
@click.option("--snapshotter", envvar="BERTH_SNAPSHOTTER", default="", help="Unpack into it.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the image names.")
@pass_state
def import_(
    state: State,
    archive: str,
    base_name: str,
    platform: str,
    all_platforms: bool,
    no_unpack: bool,
    snapshotter: str,
    quiet: bool,
) -> None:
    """Import images from an OCI layout or `docker save` tar (- for stdin)."""
    source: str | BinaryIO = sys.stdin.buffer if archive == "-" else archive
    if archive != "-" and not os.path.isfile(archive):
        fail(f"{archive}: no such file", EXIT_USAGE)
    with TransferView(archive, quiet=quiet or not interactive()) as view:
        images = state.client.import_(
            source,
            base_name=base_name,
            platform=platform or None,
            all_platforms=all_platforms,
            unpack=not no_unpack,
            snapshotter=snapshotter or None,
            progress=view,
        )
    for image in images:
        click.echo(image.name if quiet else f"imported {image.name} ({image.target.digest})")


@group.command_with("export")
@click.argument("archive", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("refs", nargs=-1, required=True, shell_complete=complete.images)
@click.option("--platform", default="", help="Export this platform (default: this host's).")
@click.option("--all-platforms", is_flag=True, help="Export every platform.")
@pass_state
def export(
    state: State, archive: str, refs: tuple[str, ...], platform: str, all_platforms: bool
) -> None:
    """Write images REFS to ARCHIVE as an OCI layout tar (- for stdout)."""
    if archive == "-":
        if sys.stdout.isatty():
            fail("refusing to write a tar to a terminal: redirect stdout or name a file")
        state.client.export(
            sys.stdout.buffer, list(refs), platform=platform or None, all_platforms=all_platforms
        )
        return
    partial = f"{archive}.partial"
    try:
        state.client.export(
            partial, list(refs), platform=platform or None, all_platforms=all_platforms
        )
        os.replace(partial, archive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


@group.command_with("tag")
@click.argument("source", shell_complete=complete.images)
@click.argument("targets", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Replace a target that exists.")
@pass_state
def tag(state: State, source: str, targets: tuple[str, ...], force: bool) -> None:
    """Name the image SOURCE also as each of TARGETS."""
    import berth

    client = state.client
    image = client.get_image(source)

    def create(target: str) -> None:
        try:
            client.create_image(target, image.target, image.labels)
        except berth.AlreadyExists:
            if not force:
                raise
            client.delete_image(target)
            client.create_image(target, image.target, image.labels)
        click.echo(target)

    each(targets, create)


@group.command_with("label")
@image_arg
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_state
def label(state: State, ref: str, labels: tuple[str, ...]) -> None:
    """Set labels of an image (KEY= removes one); print its labels."""
    image = state.client.get_image(ref)
    after = image.set_labels(parse_pairs(labels)) if labels else image.labels
    click.echo(pairs_text(after))


def _availability(client: berth.Client, image: berth.Image) -> dict[str, Any]:
    import berth

    store = client.content_store()
    needed = [image.target]
    try:
        resolved = image.manifest()
        if resolved.descriptor.digest != image.target.digest:
            needed.append(resolved.descriptor)
        needed += [resolved.config, *resolved.layers]
    except berth.NotFound:
        resolved = None
    present = []
    for desc in needed:
        with contextlib.suppress(berth.NotFound):
            store.info(desc.digest)
            present.append(desc)
    complete_ = resolved is not None and len(present) == len(needed)
    unpacked = False
    if complete_:
        with contextlib.suppress(berth.NotFound):
            unpacked = image.is_unpacked()
    return {
        "name": image.name,
        "type": image.target.media_type,
        "digest": image.target.digest,
        "complete": complete_,
        "present": len(present),
        "needed": len(needed),
        "size": sum(d.size for d in present),
        "total": sum(d.size for d in needed),
        "unpacked": unpacked,
    }


@group.command_with("check")
@click.argument("filters", nargs=-1)
@format_option
@quiet_option("names of images that are complete and unpacked")
@pass_state
def check(state: State, filters: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """Check that images have all their content here, and are unpacked."""
    client = state.client
    records = [_availability(client, i) for i in client.list_images(*filters)]
    if quiet:
        records = [r for r in records if r["complete"] and r["unpacked"]]
    listing(
        records,
        [
            ("REF", field("name")),
            ("TYPE", field("type")),
            ("DIGEST", field("digest")),
            (
                "STATUS",
                lambda r: (
                    f"{'complete' if r['complete'] else 'incomplete'} "
                    f"({r['present']}/{r['needed']})"
                ),
            ),
            ("SIZE", lambda r: f"{size(r['size'])}/{size(r['total'])}"),
            ("UNPACKED", lambda r: str(r["unpacked"]).lower()),
        ],
        fmt,
        quiet=quiet,
        key="name",
    )


def _mount_lease_id(target: str) -> str:
    # One lease per mount point keeps its snapshot from garbage collection until unmount.
    return "berth-mount-" + hashlib.sha256(os.path.abspath(target).encode()).hexdigest()[:16]


@group.command_with("mount")
@image_arg
@click.argument("target", type=click.Path(file_okay=False, exists=True))
@click.option("--rw", is_flag=True, help="A writable snapshot instead of a read-only view.")
@click.option("--snapshotter", envvar="BERTH_SNAPSHOTTER", default="", help="Snapshotter.")
@click.option("--platform", default="", help="Mount this platform's root filesystem.")
@pass_state
def mount(state: State, ref: str, target: str, rw: bool, snapshotter: str, platform: str) -> None:
    """Mount the image's root filesystem at TARGET (unpacking it first if need be)."""
    import berth
    from berth.cli.specs import find_image

    client = state.client
    target = os.path.abspath(target)
    image = find_image(client, ref, platform)
    name = snapshotter or client.default_snapshotter()
    if not image.is_unpacked(name):
        image.unpack(name)
    service = client.snapshot_service(name)
    try:
        lease = client.create_lease(_mount_lease_id(target), expire=None)
    except berth.AlreadyExists:
        fail(f"{target} is mounted already (berth images unmount {target})")
    try:
        with lease.use():
            make = service.prepare if rw else service.view
            mounts = make(target, image.chain_id(), None)
        try:
            berth.mount.mount_all(mounts, target)
        except BaseException:
            service.remove(target)
            raise
    except BaseException:
        lease.delete()
        raise
    click.echo(target)


@group.command_with("unmount")
@click.argument("target", type=click.Path(file_okay=False))
@click.option("--rm", is_flag=True, help="Remove the snapshot too.")
@click.option("--snapshotter", envvar="BERTH_SNAPSHOTTER", default="", help="Snapshotter.")
@pass_state
def unmount(state: State, target: str, rm: bool, snapshotter: str) -> None:
    """Unmount an image mounted at TARGET."""
    import berth

    target = os.path.abspath(target)
    berth.mount.unmount_all(target)
    if rm:
        client = state.client
        with contextlib.suppress(berth.NotFound):
            berth.Lease(client, _mount_lease_id(target)).delete()
        with contextlib.suppress(berth.NotFound):
            client.snapshot_service(snapshotter or None).remove(target)
    click.echo(target)
