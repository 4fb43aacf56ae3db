"""``berth snapshots``: one snapshotter's tree of active, view and committed snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from berth.cli.core import AliasGroup, State, each, pairs_text, parse_pairs, pass_state
from berth.cli.output import (
    emit_json,
    field,
    format_option,
    from_nanoseconds,
    listing,
    size,
    timestamp,
)

if TYPE_CHECKING:
    import berth


@click.group(
    "snapshots",
    cls=AliasGroup,
    help="Manage snapshots: root filesystems and the layers under them.",
)
@click.option("--snapshotter", envvar="BERTH_SNAPSHOTTER", default="",
              help="Which snapshotter (default: the namespace's, overlayfs).")  # fmt: skip
@click.pass_context
def group(ctx: click.Context, snapshotter: str) -> None:
    ctx.meta["snapshotter"] = snapshotter


assert isinstance(group, AliasGroup)


def _service(state: State) -> Any:
    name = click.get_current_context().meta.get("snapshotter") or None
    return state.client.snapshot_service(name)


def _kind(info: Any) -> str:
    return str(info.kind.name).title()


def snapshot_record(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "parent": info.parent,
        "kind": _kind(info),
        "labels": dict(info.labels),
        "created_at": timestamp(from_nanoseconds(info.created_at)),
        "updated_at": timestamp(from_nanoseconds(info.updated_at)),
    }


def _mount_record(m: berth.mount.Mount) -> dict[str, Any]:
    return {"type": m.type, "source": m.source, "target": m.target, "options": list(m.options)}


def _show_mounts(mounts: Sequence[berth.mount.Mount], target: str, as_json: bool) -> None:
    import berth

    if as_json:
        emit_json([_mount_record(m) for m in mounts])
    elif target:
        for m in mounts:
            click.echo(berth.mount.command(m, target))


def _make(state: State, view: bool, key: str, parent: str, target: str, mounts: bool) -> None:
    service = _service(state)
    made = (service.view if view else service.prepare)(key, parent, None)
    _show_mounts(made, target, mounts)


@group.command_with("prepare")
@click.argument("key")
@click.argument("parent", default="")
@click.option("--target", "-t", default="", help="Print the mount commands for this path.")
@click.option("--mounts", is_flag=True, help="Print the mounts as JSON.")
@pass_state
def prepare(state: State, key: str, parent: str, target: str, mounts: bool) -> None:
    """A new active (writable) snapshot KEY on top of the committed PARENT."""
    _make(state, False, key, parent, target, mounts)


@group.command_with("view")
@click.argument("key")
@click.argument("parent", default="")
@click.option("--target", "-t", default="", help="Print the mount commands for this path.")
@click.option("--mounts", is_flag=True, help="Print the mounts as JSON.")
@pass_state
def view(state: State, key: str, parent: str, target: str, mounts: bool) -> None:
    """A new read-only view KEY of the committed PARENT."""
    _make(state, True, key, parent, target, mounts)


@group.command_with("mounts", "m", "mount")
@click.argument("target")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="The mounts as JSON.")
@pass_state
def mounts(state: State, target: str, key: str, as_json: bool) -> None:
    """Print the commands that mount snapshot KEY at TARGET."""
    _show_mounts(_service(state).mounts(key), target, as_json)


@group.command_with("commit")
@click.argument("name")
@click.argument("key")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Label of the snapshot.")
@pass_state
def commit(state: State, name: str, key: str, label: tuple[str, ...]) -> None:
    """Commit the active snapshot KEY as NAME (KEY is gone after)."""
    _service(state).commit(name, key, parse_pairs(label) or None)


@group.command_with("ls", "list")
@click.argument("filters", nargs=-1)
@format_option
@pass_state
def ls(state: State, filters: tuple[str, ...], fmt: str) -> None:
    """List the snapshots of the snapshotter."""
    records = [snapshot_record(i) for i in _service(state).walk(filters)]
    listing(
        records,
        [("KEY", field("name")), ("PARENT", field("parent", "")), ("KIND", field("kind"))],
        fmt,
    )


@group.command_with("tree")
@pass_state
def tree(state: State) -> None:
    """The snapshots as a tree, each under its parent."""
    infos = list(_service(state).walk())
    children: dict[str, list[str]] = {}
    for info in infos:
        children.setdefault(info.parent, []).append(info.name)

    def show(name: str, depth: int) -> None:
        click.echo(f"{'  ' * depth}\\_ {name}" if depth else name)
        for child in sorted(children.get(name, [])):
            show(child, depth + 1)

    names = {i.name for i in infos}
    for root in sorted(n for n in children.get("", [])):
        show(root, 0)
    # Parents from elsewhere (not listed) still root their subtrees.
    for parent in sorted(p for p in children if p and p not in names):
        for child in sorted(children[parent]):
            show(child, 0)


@group.command_with("usage")
@click.argument("keys", nargs=-1)
@click.option("-b", "in_bytes", is_flag=True, help="Sizes in bytes.")
@format_option
@pass_state
def usage(state: State, keys: tuple[str, ...], in_bytes: bool, fmt: str) -> None:
    """Disk used by snapshots (what each adds over its parent)."""
    service = _service(state)
    names = list(keys) or [i.name for i in service.walk()]
    records = []
    for key in names:
        used = service.usage(key)
        records.append({"name": key, "size": used.size, "inodes": used.inodes})
    listing(
        records,
        [
            ("KEY", field("name")),
            ("SIZE", lambda r: str(r["size"]) if in_bytes else size(r["size"])),
            ("INODES", field("inodes")),
        ],
        fmt,
    )


@group.command_with("rm", "delete", "del", "remove")
@click.argument("keys", nargs=-1, required=True)
@pass_state
def rm(state: State, keys: tuple[str, ...]) -> None:
    """Remove snapshots (not one that others have as parent)."""
    service = _service(state)
    each(keys, service.remove)


@group.command_with("info")
@click.argument("key")
@pass_state
def info(state: State, key: str) -> None:
    """A snapshot's record as JSON."""
    emit_json(snapshot_record(_service(state).stat(key)))


@group.command_with("label")
@click.argument("key")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_state
def label(state: State, key: str, labels: tuple[str, ...]) -> None:
    """Set labels of a snapshot (KEY= removes one); print its labels."""
    service = _service(state)
    current = service.stat(key)
    if labels:
        import dataclasses

        wanted = parse_pairs(labels)
        updated = dataclasses.replace(current, labels={k: v for k, v in wanted.items() if v})
        current = service.update(updated, [f"labels.{k}" for k in wanted])
    click.echo(pairs_text(current.labels))
