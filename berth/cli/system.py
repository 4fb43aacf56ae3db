"""``berth plugins`` and ``berth version``: what the suite is made of."""

from __future__ import annotations

import platform
from typing import Any

import click

from berth.cli.core import AliasGroup, State, pass_state
from berth.cli.output import emit_json, field, format_option, listing, quiet_option

plugins = AliasGroup("plugins", help="What the suite provides, as containerd's plugins.")


def _plugin_record(p: Any) -> dict[str, Any]:
    platforms = ["/".join(x for x in (q.os, q.architecture, q.variant) if x) for q in p.platforms]
    return {
        "type": p.type,
        "id": p.id,
        "platforms": platforms,
        "requires": list(p.requires),
        "exports": dict(p.exports),
        "capabilities": list(p.capabilities),
        "status": "error" if p.HasField("init_err") else "ok",
        "error": p.init_err.message if p.HasField("init_err") else None,
    }


@plugins.command_with("ls", "list")
@click.argument("filters", nargs=-1)
@format_option
@quiet_option("plugin IDs")
@pass_state
def plugins_ls(state: State, filters: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """List plugins (FILTERS as containerd's: type==io.containerd.snapshotter.v1)."""
    records = [_plugin_record(p) for p in state.client.plugins(*filters)]
    listing(
        records,
        [
            ("TYPE", field("type")),
            ("ID", field("id")),
            ("PLATFORMS", lambda r: ",".join(r["platforms"]) or "-"),
            ("STATUS", field("status")),
        ],
        fmt,
        quiet=quiet,
    )


@click.command("version")
@format_option
@pass_state
def version(state: State, fmt: str) -> None:
    """This client's version and the suite's."""
    import berth

    client_side = {"version": berth.__version__, "python": platform.python_version()}
    server_version, revision = state.client.version()
    uuid = state.client.server().uuid
    server = {"version": server_version, "revision": revision, "uuid": uuid}
    if fmt == "json":
        emit_json({"client": client_side, "server": server})
        return
    click.echo("Client:")
    click.echo(f"  Version:  {client_side['version']}")
    click.echo(f"  Python:   {client_side['python']}")
    click.echo("")
    click.echo("Server:")
    click.echo(f"  Version:  {server['version']}")
    click.echo(f"  Revision: {server['revision']}")
    click.echo(f"  UUID:     {server['uuid']}")
