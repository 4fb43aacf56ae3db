"""``berth events``: what happens in the suite, as it happens."""

from __future__ import annotations

import json

import click

from berth.cli.core import State, pass_state
from berth.cli.output import proto_json, timestamp


@click.command("events")
@click.argument("filters", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event: ctr's text, or a JSON object (JSON Lines).",
)
@pass_state
def events(state: State, filters: tuple[str, ...], fmt: str) -> None:
    """Print events as they happen, in every namespace unless FILTERS say otherwise
    (namespace==default, topic~="^/tasks/"; several filters match any). Runs until
    interrupted."""
    subscription = state.client.subscribe(*filters)
    try:
        for event in subscription:
            when = timestamp(event.timestamp)
            payload = proto_json(event.event)
            if fmt == "json":
                record = {"timestamp": when, "namespace": event.namespace,
                          "topic": event.topic, "event": payload}  # fmt: skip
                click.echo(json.dumps(record))
            else:
                body = json.dumps(payload, separators=(",", ":"))
                click.echo(f"{when} {event.namespace} {event.topic} {body}")
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    finally:
        subscription.close()
