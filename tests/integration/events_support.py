"""Subscribing to berth's events in a test: a live subscription, collected in a list."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import grpc

from shared import typeurl
from shared.api.containerd.events import task_pb2 as task_events
from shared.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from shared.config import grpc_target
from tests.harness import Suite


@contextlib.contextmanager
def subscribed(suite: Suite, namespace: str, *topics: str) -> Iterator[list[events_pb2.Envelope]]:
    """Events of ``topics`` in ``namespace`` from the moment this returns (the gateway's
    headers on Subscribe say the subscription is in place)."""
    filters = [f'topic=="{t}",namespace=={namespace}' for t in topics]
    seen: list[events_pb2.Envelope] = []
    with grpc.insecure_channel(grpc_target(suite.address)) as ch:
        stream = events_pb2_grpc.EventsStub(ch).Subscribe(
            events_pb2.SubscribeRequest(filters=filters)
        )
        stream.initial_metadata()

        def drain() -> None:
            with contextlib.suppress(grpc.RpcError):
                seen.extend(stream)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            yield seen
        finally:
            stream.cancel()
            reader.join(10)


def ooms_of(seen: list[events_pb2.Envelope], container: str) -> int:
    return sum(
        1
        for e in list(seen)
        if e.topic == "/tasks/oom"
        and typeurl.unpack_as(e.event, task_events.TaskOOM).container_id == container
    )


def exits_of(seen: list[events_pb2.Envelope], container: str) -> list[int]:
    """Exit statuses of ``container``'s init process, in order."""
    found = []
    for e in list(seen):
        if e.topic == "/tasks/exit":
            exit_event = typeurl.unpack_as(e.event, task_events.TaskExit)
            if exit_event.container_id == container and exit_event.id == container:
                found.append(exit_event.exit_status)
    return found
