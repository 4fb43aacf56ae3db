"""``python -m services.content``: serve containerd.services.content.v1.Content."""

from __future__ import annotations

import asyncio

from services.content.local import LocalStore
from services.content.metadata import NamespacedStore
from services.content.servicer import ContentServicer
from shared import plugins, topology
from shared.api.containerd.services.content.v1 import content_pb2_grpc
from shared.db import Database, migrate
from shared.events.bus import EventBus
from shared.events.outbox import Outbox
from shared.service import ServiceProcess, run


async def setup(svc: ServiceProcess) -> None:
    config = svc.config
    root = config.root / "content"
    db = Database(config.database_url)
    svc.on_shutdown(db.dispose)
    await asyncio.to_thread(migrate, db.engine)
    store = NamespacedStore(LocalStore(root), db)

    bus = EventBus(config.nats_url, stream=config.events_stream, name="berth-content")
    await bus.connect()
    svc.on_shutdown(bus.close)
    outbox = Outbox(bus)
    svc.spawn(outbox.run(), name="event outbox")
    svc.on_shutdown(outbox.flush)

    svc.add_grpc(
        "containerd.services.content.v1.Content",
        content_pb2_grpc.add_ContentServicer_to_server,
        ContentServicer(store, outbox),
    )
    svc.plugins = [
        plugins.Plugin(plugins.CONTENT, "content", exports={"root": str(root)}),
        plugins.Plugin(
            plugins.METADATA,
            "content",
            requires=(plugins.CONTENT,),
            exports={"database": db.dialect},
        ),
        *plugins.grpc_plugins(topology.CONTENT, ("content",), requires=(plugins.CONTENT,)),
    ]


def main() -> int:
    return run(topology.CONTENT, setup)


if __name__ == "__main__":
    raise SystemExit(main())
