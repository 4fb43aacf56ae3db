"""Events: what happened in the suite, as containerd's ``Envelope`` stream.

::

    with client.subscribe('topic=="/tasks/exit"', "namespace==default") as events:
        for event in events:
            print(event.topic, event.event.container_id, event.event.exit_status)

Filters use containerd's syntax on ``topic``, ``namespace`` and ``event.<field>``;
several filters match any of them. Only events from the moment the stream is
open arrive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, message

from shared import identifiers, typeurl
from shared.api.containerd.services.events.v1 import events_pb2
from shared.errors import Canceled, NotFound
from shared.events.envelope import load_event_types

if TYPE_CHECKING:
    from berth.client import Client


@dataclass(frozen=True)
class Event:
    """One event: when, in which namespace, its topic (``/tasks/exit``) and its message
    (``containerd.events.TaskExit``; a bare ``Any`` if its type is unknown here)."""

    timestamp: datetime | None
    namespace: str
    topic: str
    event: message.Message


def decode(envelope: events_pb2.Envelope) -> Event:
    from berth.client import to_datetime

    payload: message.Message
    try:
        payload = typeurl.unpack(envelope.event)
    except NotFound:
        payload = any_pb2.Any()
        payload.CopyFrom(envelope.event)
    return Event(to_datetime(envelope.timestamp), envelope.namespace, envelope.topic, payload)


class Subscription:
    """An open event stream; iterate it, and :meth:`close` it (or use it in ``with``).

    It is live when the constructor returns: every event published afterwards
    arrives (berth's gateway answers with headers once the subscription is in
    place; containerd sends none until the first event, so against containerd
    this would wait for one).
    """

    def __init__(self, client: Client, filters: Sequence[str]) -> None:
        load_event_types()
        self._closed = False
        self._stream: Any = client.api.events.Subscribe(
            events_pb2.SubscribeRequest(filters=list(filters))
        )
        self._stream.initial_metadata()  # a failed call shows up when it is iterated

    def __iter__(self) -> Iterator[Event]:
        try:
            for envelope in self._stream:
                yield decode(envelope)
        except Canceled:
            if not self._closed:
                raise

    def close(self) -> None:
        self._closed = True
        self._stream.cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish(client: Client, topic: str, event: message.Message) -> None:
    """Publish ``event`` on ``topic`` in the client's namespace."""
    identifiers.validate_topic(topic)
    client.api.events.Publish(events_pb2.PublishRequest(topic=topic, event=typeurl.pack(event)))
