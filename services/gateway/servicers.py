"""What the gateway process serves itself: Version, Introspection (joined), Events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2

from shared import context as request_context
from shared import identifiers, plugins, topology
from shared.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from shared.api.containerd.services.introspection.v1 import (
    introspection_pb2,
    introspection_pb2_grpc,
)
from shared.api.containerd.services.version.v1 import version_pb2, version_pb2_grpc
from shared.errors import InvalidArgument
from shared.events.bus import EventBus
from shared.events.envelope import matcher
from shared.rpc import introspection
from shared.version import revision, server_version

if TYPE_CHECKING:
    from shared.api.containerd.services.introspection.v1.introspection_pb2_grpc import (
        IntrospectionAsyncStub,
    )

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


SUBSCRIBED_HEADER = "berth-subscribed"


class VersionServicer(version_pb2_grpc.VersionServicer):
    async def Version(
        self, request: empty_pb2.Empty, context: Context
    ) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=server_version(), revision=revision())


class JoinedIntrospection(introspection_pb2_grpc.IntrospectionServicer):
    """The plugins of every running process, asked of each over its own socket.

    A process that does not answer is listed by its gRPC services with an
    init error, so ``ctr plugins ls`` shows it as ``error`` instead of hiding it.
    """

    ASK_TIMEOUT = 2.0

    def __init__(
        self,
        own: Sequence[plugins.Plugin],
        backends: Mapping[str, IntrospectionAsyncStub],
        root: Path,
    ) -> None:
        self._own = list(own)
        self._backends = dict(backends)
        self._root = root

    async def _ask(
        self, process: str, stub: IntrospectionAsyncStub
    ) -> list[introspection_pb2.Plugin]:
        try:
            reply = await stub.Plugins(introspection_pb2.PluginsRequest(), timeout=self.ASK_TIMEOUT)
            return list(reply.plugins)
        except grpc.aio.AioRpcError as e:
            log.warning("introspection of %s failed: %s", process, e.details())
            service_ids = tuple(
                s.rsplit(".", 1)[-1].lower() for s in topology.GRPC_SERVICES[process]
            )
            down = plugins.grpc_plugins(process, service_ids)
            message = f"berth {process} service is unavailable: {e.code().name}"
            return [introspection.plugin_to_proto(p.with_error(message)) for p in down]

    async def Plugins(
        self, request: introspection_pb2.PluginsRequest, context: Context
    ) -> introspection_pb2.PluginsResponse:
        joined = [introspection.plugin_to_proto(p) for p in self._own]
        answers = await asyncio.gather(*(self._ask(n, s) for n, s in self._backends.items()))
        for answer in answers:
            joined.extend(answer)
        return introspection_pb2.PluginsResponse(
            plugins=introspection.select(joined, request.filters)
        )

    async def Server(
        self, request: empty_pb2.Empty, context: Context
    ) -> introspection_pb2.ServerResponse:
        return introspection.server_response(self._root)


class EventsServicer(events_pb2_grpc.EventsServicer):
    """containerd's Events API over the NATS bus."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def Publish(
        self, request: events_pb2.PublishRequest, context: Context
    ) -> empty_pb2.Empty:
        namespace = request_context.require_namespace()
        identifiers.validate_topic(request.topic)
        if not request.event.type_url:
            raise InvalidArgument("event must not be empty")
        envelope = self._bus.envelope(request.topic, empty_pb2.Empty(), namespace)
        envelope.event.CopyFrom(request.event)
        await self._bus.forward(envelope)
        return empty_pb2.Empty()

    async def Forward(
        self, request: events_pb2.ForwardRequest, context: Context
    ) -> empty_pb2.Empty:
        if not request.HasField("envelope"):
            raise InvalidArgument("envelope must not be empty")
        await self._bus.forward(request.envelope)
        return empty_pb2.Empty()

    async def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[events_pb2.Envelope]:
        matcher(request.filters)  # reject bad syntax before the stream starts

        async def subscribed() -> None:
            # Headers before any event: a client that waits for them knows it will
            # miss nothing published from then on (containerd gives no such signal).
            await context.send_initial_metadata(((SUBSCRIBED_HEADER, "1"),))

        async for envelope in self._bus.subscribe(request.filters, subscribed):
            yield envelope
