"""The ``berth`` command: global options, the command tree, errors as one line."""

from __future__ import annotations

import traceback
from typing import Any

import click

from berth.cli import (
    containers,
    content,
    events,
    images,
    leases,
    namespaces,
    run,
    snapshots,
    system,
    tasks,
)
from berth.cli.core import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    EXIT_FAILURE,
    NAMESPACE_ENV,
    AliasGroup,
    Failure,
    State,
    describe,
)


class Root(AliasGroup):
    """Turns what commands let through into ``berth: <message>`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        obj = ctx.ensure_object(State)
        try:
            return super().invoke(ctx)
        except Failure as failure:
            message, code = failure.message, failure.code
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            raise  # a reader that went away (| head): click ends quietly
        except Exception as error:
            if obj.debug:
                traceback.print_exc()
            try:
                message, code = describe(error, obj.address)
            except Exception:
                message, code = f"internal error: {type(error).__name__}: {error}", EXIT_FAILURE
        finally:
            obj.close()
        click.echo(f"berth: {message}", err=True)
        raise click.exceptions.Exit(obj.failure_code or code)


@click.group(
    cls=Root,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--address",
    "-a",
    envvar=ADDRESS_ENV,
    default=DEFAULT_ADDRESS,
    show_default=True,
    show_envvar=True,
    help="The suite's socket (a path, unix:// URL or host:port).",
)
@click.option(
    "--namespace",
    "-n",
    envvar=NAMESPACE_ENV,
    default="default",
    show_default=True,
    show_envvar=True,
    help="Namespace to work in.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.version_option(package_name="berth", prog_name="berth", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, address: str, namespace: str, debug: bool) -> None:
    """berth: containerd rebuilt in Python, driven from the command line.

    The commands are ctr's (images, containers, tasks, snapshots, content, namespaces,
    leases, events, plugins, version, run), with tables by default, --format json for
    scripts, and progress bars for pull and push.
    """
    # The State the root's error handling already holds: filled in, not replaced.
    state = ctx.ensure_object(State)
    state.address, state.namespace, state.debug = address, namespace, debug


assert isinstance(cli, Root)
cli.add_aliased(system.plugins, "plugin")
cli.add_aliased(system.version)
cli.add_aliased(containers.group, "c", "container")
cli.add_aliased(content.group)
cli.add_aliased(events.events, "event")
cli.add_aliased(images.group, "image", "i")
cli.add_aliased(leases.group, "lease")
cli.add_aliased(namespaces.group, "namespace", "ns")
cli.add_aliased(run.run)
cli.add_aliased(snapshots.group, "snapshot")
cli.add_aliased(tasks.group, "t", "task")


def main() -> None:
    cli(prog_name="berth")
