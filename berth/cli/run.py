"""``berth run``: make a container from an image and run its process, as ``ctr run``."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from berth.cli import networking, session
from berth.cli.core import EXIT_RUN_FAILURE, EXIT_USAGE, State, fail, pass_state
from berth.cli.specs import container_options, create_container, find_image, image_argument


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--rm", is_flag=True, help="Remove the container (and its snapshot) at the end.")
@click.option("--detach", "-d", is_flag=True, help="Start the process and return at once.")
@click.option("--pull", is_flag=True, help="Pull the image first if the namespace lacks it.")
@click.option("--null-io", is_flag=True, help="Give the process nothing as stdio.")
@click.option("--log-uri", default="", help="Send stdout and stderr to file:///path or binary://.")
@click.option("--fifo-dir", default=None, help="Where the stdio FIFOs are made.")
@click.option("--pid-file", default="", help="Write the process's pid here.")
@click.option("--cni", is_flag=True, help="Attach to the default CNI network ($BERTH_CNI_*).")
@container_options
@image_argument
@click.argument("container_id", metavar="ID")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def run(
    state: State,
    /,
    image: str,
    container_id: str,
    command: tuple[str, ...],
    rm: bool,
    detach: bool,
    pull: bool,
    null_io: bool,
    log_uri: str,
    fifo_dir: str | None,
    pid_file: str,
    cni: bool,
    **flags: Any,
) -> None:
    """Run COMMAND (default: the image's) in a new container ID made from IMAGE.

    The process gets this terminal's stdio (a terminal of its own with -t) and berth exits
    with its exit status; -d starts it and returns. Nothing is pulled unless --pull says so.
    """
    import berth

    if rm and detach:
        fail("--rm and --detach cannot be used together", EXIT_USAGE)
    if cni and flags["net_host"]:
        fail("--cni and --net-host cannot be used together", EXIT_USAGE)
    state.failure_code = EXIT_RUN_FAILURE
    client = state.client
    if pull and not flags["rootfs"]:
        try:
            client.get_image(image)
        except berth.NotFound:
            from berth.cli.images import pull_image

            pull_image(client, image, platform=flags["platform"], snapshotter=flags["snapshotter"])
    creator = session.streams(
        terminal=flags["tty"], null_io=null_io, log_uri=log_uri, fifo_dir=fifo_dir
    )
    if not flags["rootfs"]:
        find_image(client, image, flags["platform"])  # a clear message before anything is made
    network = networking.default_network() if cni else None
    container = create_container(client, container_id, image, command, flags)
    try:
        with session.raw_terminal(flags["tty"] and not detach):
            task = container.new_task(creator)
            exited = None if detach else task.wait()
            try:
                session.write_pid_file(pid_file, task.pid)
                if network is not None:
                    # Into the task's namespace before its process runs, as ctr does;
                    # `berth tasks rm` tears down what a detached run set up.
                    networking.attach(network, container_id, task.pid)
                task.start()
                if exited is None:
                    if task.io is not None:
                        task.io.detach()  # the FIFOs stay for `berth tasks attach`
                    return
                code = session.wait_attached(task, exited, terminal=flags["tty"])
            except BaseException:
                if network is not None:
                    networking.detach(container_id)
                with contextlib.suppress(berth.BerthError):
                    task.delete(force=True)
                raise
            if network is not None:
                networking.detach(container_id)
            task.delete()
    finally:
        if rm:
            with contextlib.suppress(berth.NotFound):
                container.delete()
    raise click.exceptions.Exit(code)
