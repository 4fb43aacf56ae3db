"""What every command shares: the client behind the global options, command aliases,
errors as one line and an exit code.

Exit codes (docs/cli.md): 0 done; 1 the suite (or the host) refused or failed;
2 bad usage or input; 3 no suite at the address. ``run``, ``tasks start``,
``tasks exec`` and ``tasks attach`` exit with the process's own status instead, and
with 125 when berth itself fails there (as ``docker run``), so the two never mix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    import berth

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_RUN_FAILURE = 125

DEFAULT_ADDRESS = "/run/berth/berth.sock"  # berth.DEFAULT_ADDRESS, without importing grpc
ADDRESS_ENV = "BERTH_ADDRESS"
NAMESPACE_ENV = "BERTH_NAMESPACE"

F = TypeVar("F", bound=Callable[..., Any])


class Failure(Exception):
    """A failure the user reads as one line on stderr (``berth: <message>``), and its exit
    code. The root command prints it; commands only raise it (:func:`fail`)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class State:
    """The global options, and the one client made from them on first use."""

    address: str = DEFAULT_ADDRESS
    namespace: str = "default"
    debug: bool = False
    # Commands that run a process change this: their own failures must not look like
    # the process's exit status.
    failure_code: int | None = None
    _client: berth.Client | None = field(default=None, repr=False)

    @property
    def client(self) -> berth.Client:
        if self._client is None:
            import berth

            self._client = berth.Client(self.address, namespace=self.namespace)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_state = click.make_pass_decorator(State, ensure=True)


def state() -> State:
    return click.get_current_context().ensure_object(State)


class AliasGroup(click.Group):
    """A group whose commands answer to ctr's aliases too (``images``, ``image``, ``i``).

    Help and shell completion list each command once, by its main name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}

    def add_aliased(self, command: click.Command, *aliases: str) -> None:
        self.add_command(command)
        assert command.name is not None
        for alias in aliases:
            self.aliases[alias] = command.name

    def command_with(
        self, name: str, *aliases: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], click.Command]:
        """``@group.command_with("delete", "rm", "remove")``."""

        def decorator(f: Callable[..., Any]) -> click.Command:
            command: click.Command = click.command(name, cls=click.Command, **kwargs)(f)
            self.add_aliased(command, *aliases)
            return command

        return decorator

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # The main name in messages and ctx.info_name, whichever alias was typed.
        _, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else None), command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        by_command: dict[str, list[str]] = {}
        for alias, name in self.aliases.items():
            by_command.setdefault(name, []).append(alias)
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            label = ", ".join([name, *by_command.get(name, [])])
            rows.append((label, command.get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # ctr's order reads better than the alphabet: keep the order of registration.
        return list(self.commands)


def group(name: str, help: str, **kwargs: Any) -> AliasGroup:
    return AliasGroup(name=name, help=help, **kwargs)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    raise Failure(message, code)


# -- berth errors as one line ---------------------------------------------------------------


def describe(error: BaseException, address: str) -> tuple[str, int]:
    """The line and exit code for an error a command let through."""
    import berth

    unreachable = isinstance(error, berth.Unreachable) or (
        # The content and snapshot proxies translate errors on their own, plainly.
        isinstance(error, berth.Unavailable) and "failed to connect to all addresses" in str(error)
    )
    if unreachable:
        return (
            f"cannot reach berth at {address}: is berthd running? "
            f"(--address or ${ADDRESS_ENV} say where)",
            EXIT_UNREACHABLE,
        )
    if isinstance(error, berth.InvalidArgument):
        return str(error), EXIT_USAGE
    if isinstance(error, berth.BerthError):
        return str(error) or type(error).__name__, EXIT_FAILURE
    if isinstance(error, OSError):
        # Local files and devices: "cannot open x.tar: No such file or directory".
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", EXIT_FAILURE
    raise error


def parse_pairs(pairs: Iterable[str], what: str = "label") -> dict[str, str]:
    """``key=value`` arguments (a bare ``key`` is ``key=``: an empty value clears a label)."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not key:
            fail(f"invalid {what} {pair!r}: want key=value", EXIT_USAGE)
        found[key] = value
    return found


def pairs_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def interactive() -> bool:
    """Whether stdout is a terminal a person reads (progress bars, colours)."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def each(items: Iterable[str], action: Callable[[str], None]) -> None:
    """Do ``action`` for every item, going on after a failure as ctr does; fail at the end
    with the first error if any failed."""
    import berth

    errors: list[tuple[str, BaseException]] = []
    for item in items:
        try:
            action(item)
        except berth.Unreachable:
            raise
        except (berth.BerthError, OSError) as e:
            errors.append((item, e))
            line, _ = describe(e, state().address)
            click.echo(f"berth: {line}", err=True)
    if errors:
        _, code = describe(errors[0][1], state().address)
        raise click.exceptions.Exit(code)


def iter_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line
