"""Envelopes, NATS subjects, and filtering events with containerd's filter syntax.

Subject: ``berth.events.<namespace>.<topic>`` with the topic's ``/`` mapped to
``.`` (``/tasks/exit`` in ``default`` -> ``berth.events.default.tasks.exit``).
Namespaces and topic parts may themselves contain dots (``k8s.io``), so the
subject only narrows delivery; exact matching is always done on the envelope.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from google.protobuf import message

from shared import filters, typeurl
from shared.api.containerd.services.events.v1 import events_pb2
from shared.errors import BerthError

SUBJECT_PREFIX = "berth.events"
ALL_SUBJECTS = f"{SUBJECT_PREFIX}.>"

# Importing these registers containerd's event messages for decoding.
EVENT_MODULES = (
    "shared.api.containerd.events.container_pb2",
    "shared.api.containerd.events.content_pb2",
    "shared.api.containerd.events.image_pb2",
    "shared.api.containerd.events.namespace_pb2",
    "shared.api.containerd.events.snapshot_pb2",
    "shared.api.containerd.events.task_pb2",
)

Envelope = events_pb2.Envelope


def load_event_types() -> None:
    for name in EVENT_MODULES:
        importlib.import_module(name)


def subject_for(namespace: str, topic: str, prefix: str = SUBJECT_PREFIX) -> str:
    return f"{prefix}.{namespace}.{topic.strip('/').replace('/', '.')}"


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def message_field(msg: message.Message, path: Sequence[str]) -> tuple[str, bool]:
    """A field of a protobuf message by proto field names, as containerd's fieldpath adaptors."""
    if not path:
        return "", True
    field = msg.DESCRIPTOR.fields_by_name.get(path[0])
    if field is None:
        return "", False
    value = getattr(msg, path[0])
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if len(path) == 1:
            return "", len(value) > 0
        key = ".".join(path[1:])
        return (_scalar_text(value[key]), True) if key in value else ("", False)
    if field.is_repeated:
        return "", False
    if field.message_type is not None:
        if not msg.HasField(path[0]):
            return "", False
        return message_field(value, path[1:])
    if len(path) > 1:
        return "", False
    return _scalar_text(value), True


class EnvelopeAdaptor:
    """Filter fields of an envelope: ``namespace``, ``topic``, ``event.<field>``."""

    def __init__(self, envelope: events_pb2.Envelope) -> None:
        self._envelope = envelope
        self._event: message.Message | None = None

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "namespace":
            return self._envelope.namespace, bool(self._envelope.namespace)
        if head == "topic":
            return self._envelope.topic, bool(self._envelope.topic)
        if head == "event":
            if self._event is None:
                try:
                    self._event = typeurl.unpack(self._envelope.event)
                except BerthError:
                    return "", False
            return message_field(self._event, path[1:])
        return "", False


def matcher(exprs: Sequence[str]) -> filters.Filter:
    """Parse ``exprs`` once (raises filters.FilterSyntaxError on bad syntax)."""
    return filters.parse_all(list(exprs))
