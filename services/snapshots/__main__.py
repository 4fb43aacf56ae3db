"""``python -m services.snapshots``: serve Snapshots and Diff for this node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from services.snapshots.backends import Backend
from services.snapshots.backends.btrfs import BtrfsBackend
from services.snapshots.backends.native import NativeBackend
from services.snapshots.backends.overlay import OverlayBackend
from services.snapshots.backends.proxy import ProxyBackend
from services.snapshots.diff_servicer import DiffServicer
from services.snapshots.differ import Differ
from services.snapshots.servicer import SnapshotsServicer
from services.snapshots.snapshotter import Snapshotter
from services.snapshots.storage import SnapshotStorage
from shared import plugins, topology
from shared.api.containerd.services.diff.v1 import diff_pb2_grpc
from shared.api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from shared.config import Config
from shared.db import Database, migrate
from shared.errors import BerthError
from shared.events.bus import EventBus
from shared.events.outbox import Outbox
from shared.proxy.content import ContentProxy
from shared.proxy.snapshots import SnapshotterProxy
from shared.rpc import sync_client
from shared.service import ServiceProcess, run

log = logging.getLogger(__name__)

PLUGIN_PREFIX = "io.containerd.snapshotter.v1."
BUILTIN: dict[str, Callable[[Path], Backend]] = {
    "overlayfs": OverlayBackend,
    "native": NativeBackend,
    "btrfs": BtrfsBackend,
}


def _root_path(config: Config, name: str) -> Path:
    configured = config.plugin_config(PLUGIN_PREFIX + name).get("root_path", "")
    return Path(configured) if configured else config.root / "snapshots" / name


def load_snapshotters(
    config: Config, db: Database
) -> tuple[dict[str, Snapshotter], list[plugins.Plugin]]:
    """Every snapshotter this node can serve, and the plugin records that say so."""
    loaded: dict[str, Snapshotter] = {}
    records: list[plugins.Plugin] = []
    host = (plugins.host_platform(),)
    for name, make in BUILTIN.items():
        root = _root_path(config, name)
        plugin = plugins.Plugin(
            plugins.SNAPSHOTTER, name, platforms=host, exports={"root": str(root)}
        )
        try:
            backend: Backend = make(root)
        except (BerthError, OSError) as e:
            # As containerd: a snapshotter that cannot work here is listed, not served.
            log.info("snapshotter %s not loaded: %s", name, e)
            # ctr shows an init error that says "skip plugin" as "skip", like containerd's.
            records.append(plugin.with_error(f"skip plugin: {e}"))
            continue
        snapshotter = Snapshotter(name, SnapshotStorage(db, config.node_name, name), backend)
        loaded[name] = snapshotter
        records.append(plugin)
        # Other names to answer to: when this service is some containerd's (or another
        # berth's) proxy plugin, requests carry that side's name for it.
        for alias in config.plugin_config(PLUGIN_PREFIX + name).get("aliases", []):
            loaded[str(alias)] = snapshotter
    for name, proxy in config.proxy_plugins.items():
        if proxy.type not in ("snapshot", PLUGIN_PREFIX.rstrip(".")):
            continue
        remote = SnapshotterProxy(sync_client.channel(proxy.address), name)
        loaded[name] = Snapshotter(
            name, SnapshotStorage(db, config.node_name, name), ProxyBackend(remote)
        )
        records.append(
            plugins.Plugin(
                plugins.SNAPSHOTTER,
                name,
                platforms=host,
                exports={**proxy.exports, "address": proxy.address},
                capabilities=proxy.capabilities,
            )
        )
    return loaded, records


async def setup(svc: ServiceProcess) -> None:
    config = svc.config
    db = Database(config.database_url)
    svc.on_shutdown(db.dispose)
    await asyncio.to_thread(migrate, db.engine)
    snapshotters, snapshot_plugins = await asyncio.to_thread(load_snapshotters, config, db)
    for snapshotter in snapshotters.values():
        await asyncio.to_thread(snapshotter.cleanup)

    bus = EventBus(config.nats_url, stream=config.events_stream, name="berth-snapshots")
    await bus.connect()
    svc.on_shutdown(bus.close)
    outbox = Outbox(bus)
    svc.spawn(outbox.run(), name="event outbox")
    svc.on_shutdown(outbox.flush)

    content_channel = sync_client.channel(config.endpoint(topology.CONTENT).address)
    svc.on_shutdown(content_channel.close)
    content = ContentProxy(content_channel)
    differ = Differ(content, content, config.state / "snapshots" / "mounts")

    svc.add_grpc(
        "containerd.services.snapshots.v1.Snapshots",
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server,
        SnapshotsServicer(snapshotters, outbox),
    )
    svc.add_grpc(
        "containerd.services.diff.v1.Diff",
        diff_pb2_grpc.add_DiffServicer_to_server,
        DiffServicer(differ),
    )
    svc.plugins = [
        *snapshot_plugins,
        plugins.Plugin(plugins.DIFFER, "walking", platforms=(plugins.host_platform(),)),
        *plugins.grpc_plugins(topology.SNAPSHOTS, ("snapshots", "diff")),
    ]


def main() -> int:
    return run(topology.SNAPSHOTS, setup)


if __name__ == "__main__":
    raise SystemExit(main())
