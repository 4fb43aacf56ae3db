"""``python -m services.runtime``: serve Containers and Tasks."""

from __future__ import annotations

import asyncio
import shutil

from services.runtime.container_store import ContainerRecords
from services.runtime.servicers import ContainersServicer, TasksServicer
from services.runtime.tasks import TOOLS_BIN, TaskManager
from shared import plugins, topology
from shared.api.containerd.services.containers.v1 import containers_pb2_grpc
from shared.api.containerd.services.tasks.v1 import tasks_pb2_grpc
from shared.db import Database, migrate
from shared.events.bus import EventBus
from shared.events.outbox import Outbox
from shared.proxy.content import ContentProxy
from shared.rpc import sync_client
from shared.service import ServiceProcess, run

# default_binary: runc (or crun); criu_path: the criu runc uses for checkpoints.
RUNTIME_PLUGIN = "io.containerd.runtime.v2.task"


async def setup(svc: ServiceProcess) -> None:
    config = svc.config
    db = Database(config.database_url)
    svc.on_shutdown(db.dispose)
    await asyncio.to_thread(migrate, db.engine)

    bus = EventBus(config.nats_url, stream=config.events_stream, name="berth-runtime")
    await bus.connect()
    svc.on_shutdown(bus.close)
    outbox = Outbox(bus)
    svc.spawn(outbox.run(), name="event outbox")
    svc.on_shutdown(outbox.flush)

    settings = config.plugin_config(RUNTIME_PLUGIN)
    records = ContainerRecords(db)
    tasks = TaskManager(
        config.state,
        records,
        outbox,
        default_binary=str(settings.get("default_binary", "runc")),
        criu=str(
            settings.get("criu_path", "")
            or shutil.which("criu", path=f"{TOOLS_BIN}:/usr/sbin")
            or ""
        ),
        content=ContentProxy(sync_client.channel(config.endpoint(topology.CONTENT).address)),
    )
    svc.on_shutdown(tasks.shims.close)  # the zygote; the shims it made live on
    await tasks.adopt(lambda coro, name: svc.spawn(coro, name=name))

    svc.add_grpc(
        "containerd.services.containers.v1.Containers",
        containers_pb2_grpc.add_ContainersServicer_to_server,
        ContainersServicer(records, tasks, outbox),
    )
    svc.add_grpc(
        "containerd.services.tasks.v1.Tasks",
        tasks_pb2_grpc.add_TasksServicer_to_server,
        TasksServicer(tasks),
    )
    svc.plugins = [
        plugins.Plugin(
            plugins.RUNTIME,
            "task",
            platforms=(plugins.host_platform(),),
            exports={"root": str(config.root / "runtime"), "state": str(config.state / "runtime")},
        ),
        plugins.Plugin(
            plugins.INTERNAL, "restart", capabilities=("always", "unless-stopped", "no")
        ),
        *plugins.grpc_plugins(topology.RUNTIME, ("containers", "tasks")),
    ]


def main() -> int:
    return run(topology.RUNTIME, setup)


if __name__ == "__main__":
    raise SystemExit(main())
