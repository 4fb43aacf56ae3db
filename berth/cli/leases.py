"""``berth leases``: what keeps content and snapshots from garbage collection."""

from __future__ import annotations

import re
from datetime import timedelta

import click

from berth.cli import complete
from berth.cli.core import (
    EXIT_USAGE,
    AliasGroup,
    State,
    each,
    fail,
    pairs_text,
    parse_pairs,
    pass_state,
)
from berth.cli.output import field, format_option, listing, quiet_option, timestamp

group = AliasGroup("leases", help="Manage leases.")

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> timedelta:
    """Go's duration syntax as ctr takes it: ``24h``, ``1h30m``, ``90s``, ``0``."""
    match = _DURATION.fullmatch(text.strip())
    if text.strip() == "0":
        return timedelta(0)
    if not text.strip() or match is None:
        fail(f"invalid duration {text!r}: want e.g. 24h, 1h30m, 90s (0: never expires)", EXIT_USAGE)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


@group.command_with("create")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--id", "lease_id", default="", help="The lease's ID (default: made up).")
@click.option("--expires", "-x", default="24h", show_default=True,
              help="When it expires on its own (0: never).")  # fmt: skip
@pass_state
def create(state: State, labels: tuple[str, ...], lease_id: str, expires: str) -> None:
    """Create a lease; print its ID."""
    duration = parse_duration(expires)
    lease = state.client.create_lease(
        lease_id or None, expire=duration or None, labels=parse_pairs(labels)
    )
    click.echo(lease.id)


@group.command_with("ls", "list")
@click.argument("filters", nargs=-1)
@format_option
@quiet_option("lease IDs")
@pass_state
def ls(state: State, filters: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """List leases (FILTERS as containerd's: id==x, labels."k"==v)."""
    records = [
        {"id": lease.id, "created_at": timestamp(lease.created_at), "labels": dict(lease.labels)}
        for lease in state.client.leases(*filters)
    ]
    listing(
        records,
        [
            ("ID", field("id")),
            ("CREATED AT", field("created_at")),
            ("LABELS", lambda r: pairs_text(r["labels"])),
        ],
        fmt,
        quiet=quiet,
    )


@group.command_with("rm", "delete", "del", "remove")
@click.argument("lease_ids", nargs=-1, required=True, shell_complete=complete.leases)
@click.option("--sync", is_flag=True, help="Wait for the garbage collection it allows.")
@pass_state
def rm(state: State, lease_ids: tuple[str, ...], sync: bool) -> None:
    """Delete leases; print each one deleted."""
    import berth

    def delete(lease_id: str) -> None:
        berth.Lease(state.client, lease_id).delete(sync=sync)
        click.echo(lease_id)

    each(lease_ids, delete)
