"""Shell completion of names the suite knows: images, containers, tasks, namespaces.

Completion runs with the words typed so far and no command callback, so the client is
made from the root's parsed options (``--address``, ``--namespace`` or their
environment). It stays silent: a suite that is down completes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

from berth.cli.core import DEFAULT_ADDRESS

if TYPE_CHECKING:
    import berth

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]
TIMEOUT = 2.0


def _client(ctx: click.Context) -> berth.Client:
    import berth

    params = ctx.find_root().params
    return berth.Client(
        params.get("address") or DEFAULT_ADDRESS, namespace=params.get("namespace") or "default"
    )


def _names(fetch: Callable[[berth.Client], list[str]]) -> Completer:
    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        try:
            with _client(ctx) as client:
                names = fetch(client)
        except Exception:  # completion must never print a traceback into the shell
            return []
        return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]

    return complete


images = _names(lambda c: [i.name for i in c.list_images()])
containers = _names(lambda c: [x.id for x in c.containers()])
tasks = _names(lambda c: [t.container_id for t in c.tasks()])
namespaces = _names(lambda c: c.namespaces())
leases = _names(lambda c: [lease.id for lease in c.leases()])
