"""``python -m services.images``: Images, Namespaces, Leases, and the garbage collector.

``python -m services.images --config FILE gc [--dry-run]`` runs one collection
(or reports what it would remove) against the same database and services.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.images.archive_export import ArchiveExporter
from services.images.archive_import import ArchiveImporter
from services.images.gc import Collector
from services.images.gc_scheduler import GcScheduler
from services.images.image_events import AnnouncedImages
from services.images.image_store import ImageRecords
from services.images.lease_store import LeaseRecords
from services.images.namespace_store import NamespaceRecords
from services.images.pull import Puller
from services.images.push import Pusher
from services.images.servicers import ImagesServicer, LeasesServicer, NamespacesServicer
from services.images.streams import StreamingServicer, StreamManager
from services.images.transfer import TransferServicer
from shared import plugins, topology
from shared.api.containerd.services.images.v1 import images_pb2_grpc
from shared.api.containerd.services.leases.v1 import leases_pb2_grpc
from shared.api.containerd.services.namespaces.v1 import namespace_pb2_grpc
from shared.api.containerd.services.streaming.v1 import streaming_pb2_grpc
from shared.api.containerd.services.transfer.v1 import transfer_pb2_grpc
from shared.config import Config, parse_duration
from shared.db import Database, migrate
from shared.events.bus import EventBus
from shared.events.outbox import Outbox
from shared.proxy.content import ContentProxy
from shared.proxy.diff import DiffProxy
from shared.proxy.snapshots import SnapshotterProxy
from shared.registry import RegistryClient
from shared.rpc import sync_client
from shared.service import ServiceProcess, run
from shared.snapshots import Snapshotter

# Keys as containerd's scheduler: schedule_delay after a deletion; berth adds interval.
GC_PLUGIN = "io.containerd.gc.v1.scheduler"
# config_path: a certs.d directory (hosts.toml per registry); docker_config: a config.json.
TRANSFER_PLUGIN = "io.containerd.transfer.v1.local"


def make_collector(config: Config, db: Database) -> Collector:
    content = ContentProxy(sync_client.channel(config.endpoint(topology.CONTENT).address))
    snapshots_channel = sync_client.channel(config.endpoint(topology.SNAPSHOTS).address)

    def snapshotter(name: str) -> Snapshotter | None:
        return SnapshotterProxy(snapshots_channel, name)

    return Collector(db, config.node_name, content, snapshotter)


async def setup(svc: ServiceProcess) -> None:
    config = svc.config
    db = Database(config.database_url)
    svc.on_shutdown(db.dispose)
    await asyncio.to_thread(migrate, db.engine)

    bus = EventBus(config.nats_url, stream=config.events_stream, name="berth-images")
    await bus.connect()
    svc.on_shutdown(bus.close)
    outbox = Outbox(bus)
    svc.spawn(outbox.run(), name="event outbox")
    svc.on_shutdown(outbox.flush)

    gc_config = config.plugin_config(GC_PLUGIN)
    gc = GcScheduler(
        make_collector(config, db),
        interval=parse_duration(gc_config.get("interval", "5m")),
        delay=parse_duration(gc_config.get("schedule_delay", "1s")),
    )
    svc.spawn(gc.run(), name="garbage collector")
    svc.spawn(gc.follow_deletions(bus), name="garbage collector triggers")

    images = AnnouncedImages(ImageRecords(db), outbox)
    svc.add_grpc(
        "containerd.services.images.v1.Images",
        images_pb2_grpc.add_ImagesServicer_to_server,
        ImagesServicer(images, gc.collect_now),
    )
    svc.add_grpc(
        "containerd.services.namespaces.v1.Namespaces",
        namespace_pb2_grpc.add_NamespacesServicer_to_server,
        NamespacesServicer(NamespaceRecords(db), outbox),
    )
    svc.add_grpc(
        "containerd.services.leases.v1.Leases",
        leases_pb2_grpc.add_LeasesServicer_to_server,
        LeasesServicer(LeaseRecords(db), gc.collect_now),
    )
    streams = StreamManager()
    transfer_config = config.plugin_config(TRANSFER_PLUGIN)
    registry = RegistryClient(
        hosts_dir=Path(transfer_config["config_path"])
        if transfer_config.get("config_path")
        else None,
        docker_config=Path(transfer_config["docker_config"])
        if transfer_config.get("docker_config")
        else None,
    )
    svc.on_shutdown(registry.close)
    content = ContentProxy(sync_client.channel(config.endpoint(topology.CONTENT).address))
    snapshots_channel = sync_client.channel(config.endpoint(topology.SNAPSHOTS).address)
    puller = Puller(
        registry,
        content,
        images,
        LeaseRecords(db),
        lambda name: SnapshotterProxy(snapshots_channel, name),
        DiffProxy(snapshots_channel),
    )
    importer = ArchiveImporter(
        content,
        images,
        LeaseRecords(db),
        lambda name: SnapshotterProxy(snapshots_channel, name),
        DiffProxy(snapshots_channel),
    )
    svc.add_grpc(
        "containerd.services.streaming.v1.Streaming",
        streaming_pb2_grpc.add_StreamingServicer_to_server,
        StreamingServicer(streams),
    )
    svc.add_grpc(
        "containerd.services.transfer.v1.Transfer",
        transfer_pb2_grpc.add_TransferServicer_to_server,
        TransferServicer(
            puller,
            Pusher(registry, content, ImageRecords(db)),
            streams,
            importer,
            ArchiveExporter(content, ImageRecords(db)),
        ),
    )
    svc.plugins = [
        plugins.Plugin(plugins.METADATA, "images", exports={"database": db.dialect}),
        plugins.Plugin(plugins.GC, "scheduler", requires=(plugins.METADATA,)),
        plugins.Plugin(plugins.LEASE, "manager", requires=(plugins.METADATA,)),
        plugins.Plugin(plugins.TRANSFER, "local", requires=(plugins.LEASE, plugins.METADATA)),
        plugins.Plugin(plugins.STREAMING, "manager"),
        *plugins.grpc_plugins(
            topology.IMAGES, ("images", "namespaces", "leases", "transfer", "streaming")
        ),
    ]


def gc_command(argv: list[str]) -> int:
    """One collection from the command line, or a dry run that only reports."""
    from shared.service import parse_args

    dry_run = "--dry-run" in argv
    config = parse_args(topology.IMAGES, [a for a in argv if a not in ("gc", "--dry-run")])
    db = Database(config.database_url)
    try:
        plan = make_collector(config, db).collect(dry_run=dry_run)
    finally:
        db.dispose()
    verb = "would remove" if dry_run else "removed"
    for ns, digest in plan.content:
        print(f"{verb} content {ns} {digest}")
    for ns, snapshotter, key in plan.snapshots:
        print(f"{verb} snapshot {ns} {snapshotter} {key}")
    for ns, lease in plan.expired_leases:
        print(f"{verb} expired lease {ns} {lease}")
    return 0


def main() -> int:
    if "gc" in sys.argv[1:]:
        return gc_command(sys.argv[1:])
    return run(topology.IMAGES, setup)


if __name__ == "__main__":
    raise SystemExit(main())
