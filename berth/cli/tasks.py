"""``berth tasks``: a container's running process, and processes exec'd next to it."""

from __future__ import annotations

import contextlib
import secrets
import signal as signals
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from berth.cli import complete, networking, session
from berth.cli.core import (
    EXIT_RUN_FAILURE,
    EXIT_USAGE,
    AliasGroup,
    State,
    each,
    fail,
    pass_state,
)
from berth.cli.output import (
    emit_json,
    field,
    format_option,
    listing,
    proto_json,
    quiet_option,
    table,
)

if TYPE_CHECKING:
    import berth

group = AliasGroup("tasks", help="Manage tasks: the running processes of containers.")

task_arg = click.argument("container_id", metavar="ID", shell_complete=complete.tasks)


def parse_signal(text: str) -> int:
    """``SIGKILL``, ``KILL``, ``kill`` or ``9``."""
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signals.Signals[name])
    except KeyError:
        fail(f"unknown signal {text!r}", EXIT_USAGE)


def _terminal(container: berth.Container) -> bool:
    return bool((container.spec().get("process") or {}).get("terminal"))


def _io_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--null-io", is_flag=True, help="Give the process nothing as stdio."),
            click.option("--log-uri", default="", help="stdout and stderr to this log URI."),
            click.option("--fifo-dir", default=None, help="Where the stdio FIFOs are made."),
        ]
    ):
        f = option(f)
    return f


@group.command_with("start")
@task_arg
@_io_options
@click.option("--pid-file", default="", help="Write the process's pid here.")
@click.option("--detach", "-d", is_flag=True, help="Start it and return at once.")
@pass_state
def start(
    state: State,
    container_id: str,
    null_io: bool,
    log_uri: str,
    fifo_dir: str | None,
    pid_file: str,
    detach: bool,
) -> None:
    """Start the process of a created container; berth exits with its status (unless -d)."""
    state.failure_code = EXIT_RUN_FAILURE
    container = state.client.load_container(container_id)
    terminal = _terminal(container)
    creator = session.streams(
        terminal=terminal, null_io=null_io, log_uri=log_uri, fifo_dir=fifo_dir
    )
    with session.raw_terminal(terminal and not detach):
        task = container.new_task(creator)
        exited = None if detach else task.wait()
        session.write_pid_file(pid_file, task.pid)
        task.start()
        if exited is None:
            if task.io is not None:
                task.io.detach()
            return
        code = session.wait_attached(task, exited, terminal=terminal)
        task.delete()
    raise click.exceptions.Exit(code)


@group.command_with("ls", "list")
@format_option
@quiet_option("task IDs")
@pass_state
def ls(state: State, fmt: str, quiet: bool) -> None:
    """List the tasks of the namespace."""
    from berth.cli.output import timestamp

    records = [
        {
            "id": t.container_id,
            "pid": t.pid,
            "status": t.status.value.upper(),
            "exit_status": t.exit_status,
            "exited_at": timestamp(t.exited_at),
        }
        for t in state.client.tasks()
    ]
    listing(
        records, [("TASK", field("id")), ("PID", field("pid")), ("STATUS", field("status"))],
        fmt, quiet=quiet,
    )  # fmt: skip


@group.command_with("exec", context_settings={"allow_interspersed_args": False})
@task_arg
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--exec-id", default="", help="ID of the new process (default: made up).")
@click.option("--cwd", default="", help="Working directory.")
@click.option("--tty", "-t", is_flag=True, help="Give the process a terminal.")
@click.option("--detach", "-d", is_flag=True, help="Start it and return at once.")
@click.option("--user", "-u", default="", help="User (name, uid, uid:gid, name:group).")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="Environment variable.")
@click.option("--fifo-dir", default=None, help="Where the stdio FIFOs are made.")
@click.option("--log-uri", default="", help="stdout and stderr to this log URI.")
@pass_state
def exec_(
    state: State,
    container_id: str,
    command: tuple[str, ...],
    exec_id: str,
    cwd: str,
    tty: bool,
    detach: bool,
    user: str,
    env: tuple[str, ...],
    fifo_dir: str | None,
    log_uri: str,
) -> None:
    """Run COMMAND in the running container ID; berth exits with its status (unless -d)."""
    from berth import oci

    state.failure_code = EXIT_RUN_FAILURE
    client = state.client
    container = client.load_container(container_id)
    task = container.task()
    spec = container.spec()
    record = container.info(refresh=False)
    context = oci.SpecContext(
        container_id, client.namespace, client, record.snapshotter, record.snapshot_key
    )
    opts: list[oci.SpecOpt] = [oci.with_process_args(*command)]
    if cwd:
        opts.append(oci.with_process_cwd(cwd))
    if user:
        opts.append(oci.with_user(user))
    if env:
        opts.append(oci.with_env(list(env)))
    oci.apply(context, spec, *opts)
    process_spec = dict(spec.get("process") or {})
    process_spec["terminal"] = tty
    size = session.window_size() if tty else None
    if size is not None:
        process_spec["consoleSize"] = {"width": size[0], "height": size[1]}
    creator = session.streams(terminal=tty, log_uri=log_uri, fifo_dir=fifo_dir)
    exec_id = exec_id or f"exec-{secrets.token_hex(6)}"
    with session.raw_terminal(tty and not detach):
        process = task.exec(exec_id, process_spec, creator)
        exited = None if detach else process.wait()
        try:
            process.start()
            if exited is None:
                if process.io is not None:
                    process.io.detach()
                return
            code = session.wait_attached(process, exited, terminal=tty)
        except BaseException:
            with contextlib.suppress(Exception):
                process.delete(force=True)
            raise
        process.delete()
    raise click.exceptions.Exit(code)


@group.command_with("attach")
@task_arg
@pass_state
def attach(state: State, container_id: str) -> None:
    """Attach to the stdio of a running task; berth exits with its status when it ends."""
    from berth import cio

    state.failure_code = EXIT_RUN_FAILURE
    container = state.client.load_container(container_id)
    terminal = _terminal(container)
    creator = cio.terminal() if terminal else cio.stdio()
    with session.raw_terminal(terminal):
        task = container.task(attach=creator)
        exited = task.wait()
        try:
            code = session.wait_attached(task, exited, terminal=terminal)
        finally:
            if task.io is not None:
                task.io.wait(5)
                task.io.detach()
    raise click.exceptions.Exit(code)


@group.command_with("kill")
@task_arg
@click.option("--signal", "-s", "signal_name", default="",
              help="Signal (default: the container's stop signal, else SIGTERM).")  # fmt: skip
@click.option("--exec-id", default="", help="Signal this exec'd process instead.")
@click.option("--all", "-a", "all_", is_flag=True, help="Signal every process of the task.")
@pass_state
def kill(state: State, container_id: str, signal_name: str, exec_id: str, all_: bool) -> None:
    """Send a signal to a task (or one of its processes)."""
    container = state.client.load_container(container_id)
    if not signal_name:
        signal_name = container.labels().get("io.containerd.image.config.stop-signal", "SIGTERM")
    number = parse_signal(signal_name)
    task = container.task()
    process = task.load_process(exec_id) if exec_id else task
    process.kill(number, all=all_)


@group.command_with("ps")
@task_arg
@format_option
@pass_state
def ps(state: State, container_id: str, fmt: str) -> None:
    """List the processes of a task (exec'd ones with their exec ID)."""
    processes = state.client.load_container(container_id).task().pids()
    records = [{"pid": p.pid, "exec_id": p.exec_id} for p in processes]
    listing(records, [("PID", field("pid")), ("INFO", field("exec_id"))], fmt)


@group.command_with("pause")
@task_arg
@pass_state
def pause(state: State, container_id: str) -> None:
    """Freeze every process of a task."""
    state.client.load_container(container_id).task().pause()


@group.command_with("resume")
@task_arg
@pass_state
def resume(state: State, container_id: str) -> None:
    """Thaw a paused task."""
    state.client.load_container(container_id).task().resume()


@group.command_with("rm", "delete", "del", "remove")
@click.argument("container_ids", nargs=-1, required=True, shell_complete=complete.tasks)
@click.option("--force", "-f", is_flag=True, help="Kill it first if it runs.")
@click.option("--exec-id", default="", help="Remove this exec'd process instead.")
@pass_state
def rm(state: State, container_ids: tuple[str, ...], force: bool, exec_id: str) -> None:
    """Remove stopped tasks (the container stays); a non-zero exit status is reported."""

    def remove(container_id: str) -> None:
        task = state.client.load_container(container_id).task()
        process = task.load_process(exec_id) if exec_id else task
        status = process.delete(force=force)
        if not exec_id:
            networking.detach(container_id)  # what `run -d --cni` set up
        if status.code:
            click.echo(f"berth: task {process.id} exited with status {status.code}", err=True)

    each(container_ids, remove)


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{i}")
    else:
        yield prefix, str(value)


@group.command_with("metrics", "metric")
@task_arg
@format_option
@pass_state
def metrics(state: State, container_id: str, fmt: str) -> None:
    """A single sample of a task's cgroup statistics."""
    sample = state.client.load_container(container_id).task().metrics()
    data = proto_json(sample)
    if fmt == "json":
        emit_json(data)
        return
    table(["METRIC", "VALUE"], _flatten(data))


@group.command_with("checkpoint")
@task_arg
@click.option("--exit", "stop", is_flag=True, help="Stop the task after the checkpoint.")
@click.option("--ref", default="", help="Image name (default containerd.io/checkpoint/ID:DATE).")
@pass_state
def checkpoint(state: State, container_id: str, stop: bool, ref: str) -> None:
    """Checkpoint a running task with criu into a checkpoint image; print its name."""
    task = state.client.load_container(container_id).task()
    image = task.checkpoint(ref or None, exit=stop)
    click.echo(image.name)
