"""CNI for ``berth run --cni``, done on the client's side as ``ctr run --cni`` does.

The network is the first configuration in ``$BERTH_CNI_CONF_DIR`` (default
``/etc/cni/net.d``); plugins come from ``$BERTH_CNI_BIN_DIR`` (colon-separated, default
``/opt/cni/bin:/usr/lib/cni``); results are cached in ``$BERTH_CNI_CACHE_DIR`` (default
``/var/lib/cni``, libcni's). A container is known to the plugins as
``<namespace>-<id>``, ctr's name for it, so either tool can tear down the other's setup.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from berth.cli.core import describe, state

if TYPE_CHECKING:
    from shared import cni


def _plugin_dirs() -> list[str]:
    from shared import cni

    value = os.environ.get("BERTH_CNI_BIN_DIR", "")
    return [d for d in value.split(":") if d] or list(cni.DEFAULT_PLUGIN_DIRS)


def _cache_dir() -> str:
    from shared import cni

    return os.environ.get("BERTH_CNI_CACHE_DIR") or cni.DEFAULT_CACHE_DIR


def default_network() -> cni.Network:
    """The network ``--cni`` attaches to; a clear error when there is none."""
    from shared import cni

    conf_dir = os.environ.get("BERTH_CNI_CONF_DIR") or cni.DEFAULT_CONF_DIR
    return cni.Network.from_conf_dir(conf_dir, _plugin_dirs(), _cache_dir())


def full_id(container_id: str) -> str:
    return f"{state().namespace}-{container_id}"


def attach(network: cni.Network, container_id: str, pid: int) -> None:
    network.setup(full_id(container_id), f"/proc/{pid}/ns/net")


def detach(container_id: str) -> None:
    """Tear down whatever networks the cache says the container has; a failure is reported
    on stderr, never fatal: the task is gone either way."""
    import berth
    from shared import cni

    try:
        cni.detach_everywhere(full_id(container_id), _plugin_dirs(), _cache_dir())
    except (berth.BerthError, OSError) as e:
        line, _ = describe(e, state().address)
        click.echo(f"berth: network of {container_id}: {line}", err=True)
