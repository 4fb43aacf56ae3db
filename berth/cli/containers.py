"""``berth containers``: container records (create, list, info, remove, label) and their
checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from berth.cli import complete
from berth.cli.core import AliasGroup, State, each, fail, pairs_text, parse_pairs, pass_state
from berth.cli.output import (
    emit_json,
    field,
    format_option,
    listing,
    proto_json,
    quiet_option,
    timestamp,
)
from berth.cli.specs import container_options, create_container, image_argument

if TYPE_CHECKING:
    import berth

group = AliasGroup("containers", help="Manage containers (records; `tasks` runs them).")

container_arg = click.argument("container_id", metavar="ID", shell_complete=complete.containers)


@group.command_with("create", context_settings={"allow_interspersed_args": False})
@container_options
@image_argument
@click.argument("container_id", metavar="ID")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def create(
    state: State, /, image: str, container_id: str, command: tuple[str, ...], **flags: Any
) -> None:
    """Create container ID from IMAGE, to run COMMAND (default: the image's);
    `berth tasks start ID` runs it."""
    create_container(state.client, container_id, image, command, flags)


def _any(message: Any) -> Any:
    """A protobuf Any as JSON: decoded when its type is known here, else its type URL."""
    if message is None:
        return None
    try:
        return proto_json(message)
    except (TypeError, KeyError):
        return {"@type": message.type_url}


def container_record(container: berth.Container, *, spec: bool = False) -> dict[str, Any]:
    info = container.info(refresh=False)
    record: dict[str, Any] = {
        "id": info.id,
        "image": info.image,
        "runtime": {"name": info.runtime, "options": _any(info.runtime_options)},
        "snapshotter": info.snapshotter,
        "snapshot_key": info.snapshot_key,
        "labels": dict(info.labels),
        "created_at": timestamp(info.created_at),
        "updated_at": timestamp(info.updated_at),
        "extensions": {name: _any(value) for name, value in info.extensions.items()},
        "sandbox": info.sandbox,
    }
    if spec:
        record["spec"] = info.spec_dict()
    return record


@group.command_with("ls", "list")
@click.argument("filters", nargs=-1)
@format_option
@quiet_option("container IDs")
@pass_state
def ls(state: State, filters: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """List containers (FILTERS as containerd's: image~=busybox, labels."k"==v)."""
    records = [container_record(c) for c in state.client.containers(*filters)]
    listing(
        records,
        [
            ("CONTAINER", field("id")),
            ("IMAGE", field("image")),
            ("RUNTIME", lambda r: r["runtime"]["name"] or "-"),
        ],
        fmt,
        quiet=quiet,
    )


@group.command_with("info")
@container_arg
@click.option("--spec", "spec_only", is_flag=True, help="Only the OCI spec.")
@pass_state
def info(state: State, container_id: str, spec_only: bool) -> None:
    """Everything about a container, spec included, as JSON."""
    container = state.client.load_container(container_id)
    record = container_record(container, spec=True)
    emit_json(record["spec"] if spec_only else record)


@group.command_with("rm", "delete", "del", "remove")
@click.argument("container_ids", nargs=-1, required=True, shell_complete=complete.containers)
@click.option("--keep-snapshot", is_flag=True, help="Leave the container's snapshot.")
@pass_state
def rm(state: State, container_ids: tuple[str, ...], keep_snapshot: bool) -> None:
    """Remove containers (and their snapshots); a stopped task goes with its container."""
    import berth

    def remove(container_id: str) -> None:
        container = state.client.load_container(container_id)
        try:
            task = container.task()
        except berth.NotFound:
            pass
        else:
            status = task.status()
            if status not in (berth.Status.STOPPED, berth.Status.CREATED):
                fail(f"container {container_id} has a {status.value} task: kill it first")
            task.delete()
        container.delete(snapshot_cleanup=not keep_snapshot)

    each(container_ids, remove)


@group.command_with("label")
@container_arg
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_state
def label(state: State, container_id: str, labels: tuple[str, ...]) -> None:
    """Set labels of a container (KEY= removes one); print its labels."""
    container = state.client.load_container(container_id)
    after = container.set_labels(parse_pairs(labels)) if labels else container.labels()
    click.echo(pairs_text(after))


@group.command_with("checkpoint")
@container_arg
@click.argument("ref")
@click.option("--task", "with_task", is_flag=True, help="Checkpoint the running process (criu).")
@click.option("--image", "with_image", is_flag=True, help="Include the container's image.")
@click.option("--rw", is_flag=True, help="Include the file changes of its root filesystem.")
@click.option("--exit", "stop", is_flag=True, help="Stop the process after the checkpoint.")
@pass_state
def checkpoint(
    state: State,
    container_id: str,
    ref: str,
    with_task: bool,
    with_image: bool,
    rw: bool,
    stop: bool,
) -> None:
    """Save container ID as the checkpoint image REF (push it to move it elsewhere)."""
    container = state.client.load_container(container_id)
    image = container.checkpoint(ref, task=with_task, image=with_image, rw=rw, exit=stop)
    click.echo(image.name)


@group.command_with("restore")
@click.argument("container_id", metavar="ID")
@click.argument("ref", shell_complete=complete.images)
@click.option("--rw", is_flag=True, help="Restore the file changes from the checkpoint.")
@click.option("--live", is_flag=True, help="Restore the process too, and start it.")
@pass_state
def restore(state: State, container_id: str, ref: str, rw: bool, live: bool) -> None:
    """Make container ID again from the checkpoint image REF."""
    from berth.cli import session

    client = state.client
    saved = client.get_image(ref)
    container = client.restore(container_id, saved, rw=rw)
    if live:
        task = container.new_task(session.streams(terminal=False), checkpoint=saved)
        task.start()
        if task.io is not None:
            task.io.detach()
