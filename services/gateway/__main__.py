"""``python -m services.gateway``: Version, Introspection and Events for the client socket.

The client socket itself is nginx (services.gateway.router), which sends
these three services here and everything else to its owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateway.servicers import EventsServicer, JoinedIntrospection, VersionServicer
from shared import plugins, topology
from shared.api.containerd.services.events.v1 import events_pb2_grpc
from shared.api.containerd.services.introspection.v1 import introspection_pb2_grpc
from shared.api.containerd.services.version.v1 import version_pb2_grpc
from shared.events.bus import EventBus
from shared.events.envelope import load_event_types
from shared.rpc.client import aio_channel
from shared.service import INTROSPECTION, ServiceProcess, run

if TYPE_CHECKING:
    from shared.api.containerd.services.introspection.v1.introspection_pb2_grpc import (
        IntrospectionAsyncStub,
    )

OWN_PLUGINS = [
    plugins.Plugin(plugins.EVENT, "exchange", exports={"bus": "nats"}),
    *plugins.grpc_plugins(topology.GATEWAY, ("version", "introspection", "events", "healthcheck")),
]


async def setup(svc: ServiceProcess) -> None:
    config = svc.config
    load_event_types()
    bus = EventBus(config.nats_url, stream=config.events_stream, name="berth-gateway")
    await bus.connect()
    svc.on_shutdown(bus.close)

    backends: dict[str, IntrospectionAsyncStub] = {}
    for process in topology.PROCESSES:
        endpoint = config.services[process]
        if process != topology.GATEWAY and endpoint.enabled:
            channel = aio_channel(endpoint.address)
            svc.on_shutdown(channel.close)  # type: ignore[arg-type]
            backends[process] = introspection_pb2_grpc.IntrospectionStub(channel)

    svc.serve_introspection = False
    svc.plugins = OWN_PLUGINS
    svc.add_grpc(
        "containerd.services.version.v1.Version",
        version_pb2_grpc.add_VersionServicer_to_server,
        VersionServicer(),
    )
    svc.add_grpc(
        INTROSPECTION,
        introspection_pb2_grpc.add_IntrospectionServicer_to_server,
        JoinedIntrospection(OWN_PLUGINS, backends, config.root),
    )
    svc.add_grpc(
        "containerd.services.events.v1.Events",
        events_pb2_grpc.add_EventsServicer_to_server,
        EventsServicer(bus),
    )


def main() -> int:
    return run(topology.GATEWAY, setup)


if __name__ == "__main__":
    raise SystemExit(main())
