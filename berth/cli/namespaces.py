"""``berth namespaces``: separate sets of images, containers and leases on one suite."""

from __future__ import annotations

import click

from berth.cli import complete
from berth.cli.core import AliasGroup, State, each, pairs_text, parse_pairs, pass_state
from berth.cli.output import field, format_option, listing, quiet_option

group = AliasGroup("namespaces", help="Manage namespaces.")


@group.command_with("create", "c")
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_state
def create(state: State, name: str, labels: tuple[str, ...]) -> None:
    """Create namespace NAME (it must not exist)."""
    state.client.create_namespace(name, parse_pairs(labels))


@group.command_with("ls", "list")
@format_option
@quiet_option("namespace names")
@pass_state
def ls(state: State, fmt: str, quiet: bool) -> None:
    """List namespaces, with their labels."""
    client = state.client
    names = client.namespaces()
    records = [{"name": n, "labels": {} if quiet else client.namespace_labels(n)} for n in names]
    listing(
        records,
        [("NAME", field("name")), ("LABELS", lambda r: pairs_text(r["labels"]))],
        fmt,
        quiet=quiet,
        key="name",
    )


@group.command_with("rm", "remove")
@click.argument("names", nargs=-1, required=True, shell_complete=complete.namespaces)
@pass_state
def rm(state: State, names: tuple[str, ...]) -> None:
    """Remove empty namespaces; print each one removed."""

    def remove(name: str) -> None:
        state.client.delete_namespace(name)
        click.echo(name)

    each(names, remove)


@group.command_with("label")
@click.argument("name", shell_complete=complete.namespaces)
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_state
def label(state: State, name: str, labels: tuple[str, ...]) -> None:
    """Set labels of a namespace (KEY= removes one); print its labels.

    containerd.io/defaults/snapshotter and containerd.io/defaults/runtime set the
    namespace's defaults.
    """
    client = state.client
    if labels:
        after = client.set_namespace_labels(name, parse_pairs(labels))
    else:
        after = client.namespace_labels(name)
    click.echo(pairs_text(after))
