"""The event bus: containerd ``Envelope``s on NATS, kept in a JetStream stream.

* :meth:`EventBus.publish` wraps an event in an Envelope, sends it to
  ``berth.events.<ns>.<topic>`` through JetStream and waits for the stream's
  acknowledgement, so a published event survives consumers being down. The
  W3C ``traceparent`` travels in the NATS headers.
* :meth:`EventBus.subscribe` streams live events matching containerd filters
  (what ``Events.Subscribe`` and ``ctr events`` see).
* :meth:`EventBus.consume` runs a durable consumer: it resumes after the last
  acknowledged event, so a service that was down catches up on restart.

Services announce their changes through ``shared.events.outbox``, which
sends off the request path; ``publish``/``forward`` raise when the bus does
not take an event (what Events.Publish answers its caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from google.protobuf import message, timestamp_pb2
from nats.js import api as js_api
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from shared import context as request_context
from shared import identifiers, typeurl
from shared.errors import Unavailable
from shared.events.envelope import (
    SUBJECT_PREFIX,
    Envelope,
    EnvelopeAdaptor,
    matcher,
    subject_for,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Handler = Callable[[Envelope], Awaitable[None]]


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class EventBus:
    def __init__(
        self,
        url: str,
        *,
        stream: str = "BERTH_EVENTS",
        name: str = "berth",
        max_age_seconds: float = 24 * 3600,
        max_bytes: int = 256 << 20,
        publish_timeout: float = 5.0,
        subject_prefix: str = SUBJECT_PREFIX,
    ) -> None:
        self.url = url
        self.subject_prefix = subject_prefix
        self.all_subjects = f"{subject_prefix}.>"
        self.stream = stream
        self._name = name
        self._max_age = max_age_seconds
        self._max_bytes = max_bytes
        self._publish_timeout = publish_timeout
        self._nc: Any = None
        self._js: Any = None

    async def connect(self, retry_for: float = 10.0) -> None:
        """Connect (retrying for ``retry_for`` seconds) and make sure the stream exists."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                self._nc = await nats.connect(
                    self.url,
                    name=self._name,
                    connect_timeout=2,
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                )
                break
            except (OSError, nats.errors.Error) as e:
                if time.monotonic() >= deadline:
                    raise Unavailable(f"event bus at {self.url} is unreachable: {e}") from e
                await asyncio.sleep(0.2)
        self._js = self._nc.jetstream()
        config = js_api.StreamConfig(
            name=self.stream,
            subjects=[self.all_subjects],
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.LIMITS,
            discard=js_api.DiscardPolicy.OLD,
            max_age=self._max_age,
            max_bytes=self._max_bytes,
            duplicate_window=120.0,
        )
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                # Another process created it between our two calls.
                await self._js.stream_info(self.stream)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        self._nc = None
        self._js = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def envelope(self, topic: str, event: message.Message, namespace: str) -> Envelope:
        identifiers.validate_topic(topic)
        identifiers.validate(namespace, what="namespace")
        return Envelope(
            timestamp=_now(), namespace=namespace, topic=topic, event=typeurl.pack(event)
        )

    async def publish(
        self, topic: str, event: message.Message, *, namespace: str | None = None
    ) -> None:
        """Publish ``event`` under ``topic`` in ``namespace`` (default: the request's).

        Raises Unavailable if the stream did not take it.
        """
        ns = namespace or request_context.require_namespace()
        await self.forward(self.envelope(topic, event, ns))

    async def forward(self, envelope: Envelope) -> None:
        """Publish an envelope made elsewhere (containerd's Events.Forward)."""
        identifiers.validate_topic(envelope.topic)
        identifiers.validate(envelope.namespace, what="namespace")
        if not await self.send(envelope):
            raise Unavailable(f"event bus at {self.url} did not accept {envelope.topic}")

    async def send(self, envelope: Envelope, parent: otel_context.Context | None = None) -> bool:
        """Send with retries for up to the publish timeout; False if it never got through.

        ``parent`` is the trace context the event belongs to (default: the current one).
        """
        if self._js is None:
            log.warning("event %s dropped: bus not connected", envelope.topic)
            return False
        subject = subject_for(envelope.namespace, envelope.topic, self.subject_prefix)
        with tracer.start_as_current_span(
            f"publish {envelope.topic}",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            payload = envelope.SerializeToString()
            # The same id on every retry lets JetStream drop a duplicate whose ack was lost.
            headers = {"Nats-Msg-Id": hashlib.sha256(payload).hexdigest()[:32]}
            propagate.inject(headers)
            deadline = time.monotonic() + self._publish_timeout
            while True:
                try:
                    await self._js.publish(
                        subject, payload, headers=headers, timeout=self._publish_timeout
                    )
                    return True
                except (nats.errors.Error, nats.js.errors.Error, OSError) as e:
                    if time.monotonic() >= deadline:
                        log.error("event %s not published: %s", envelope.topic, e)
                        return False
                    await asyncio.sleep(0.1)

    async def subscribe(
        self,
        filters: Sequence[str] = (),
        on_subscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Envelope]:
        """Live events that match ``filters`` (containerd syntax; empty = all).

        ``on_subscribed`` runs once the NATS server has the subscription: every
        event published after it returns is delivered.
        """
        if self._nc is None:
            raise Unavailable("event bus not connected")
        match = matcher(filters)
        sub = await self._nc.subscribe(self.all_subjects, pending_msgs_limit=65536)
        try:
            if on_subscribed is not None:
                await self._nc.flush()  # a PING answered means the SUB is in place
                await on_subscribed()
            async for msg in sub.messages:
                envelope = Envelope()
                try:
                    envelope.ParseFromString(msg.data)
                except message.DecodeError:
                    log.warning("dropping undecodable message on %s", msg.subject)
                    continue
                if match.match(EnvelopeAdaptor(envelope)):
                    yield envelope
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def consume(
        self,
        durable: str,
        handler: Handler,
        *,
        filters: Sequence[str] = (),
        subject: str = "",
        batch: int = 64,
    ) -> None:
        """Deliver every matching event, including those published while we were down.

        Runs until cancelled. An event is acknowledged after ``handler``
        returns; if the handler raises, the event is redelivered later.
        """
        if self._js is None:
            raise Unavailable("event bus not connected")
        match = matcher(filters)
        subject = subject or self.all_subjects
        config = js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=10.0,  # an event handed to a consumer that died comes back after this
            max_ack_pending=1024,
            filter_subject=subject,
        )
        psub = await self._js.pull_subscribe(
            subject, durable=durable, stream=self.stream, config=config
        )
        try:
            while True:
                try:
                    msgs = await psub.fetch(batch, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except nats.errors.Error as e:
                    log.warning("consumer %s: fetch failed: %s", durable, e)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._deliver(durable, msg, match, handler)
        finally:
            # Withdraw our interest so the server stops handing us events.
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _deliver(self, durable: str, msg: Any, match: Any, handler: Handler) -> None:
        envelope = Envelope()
        try:
            envelope.ParseFromString(msg.data)
        except message.DecodeError:
            log.warning("consumer %s: dropping undecodable message", durable)
            await msg.ack()
            return
        if not match.match(EnvelopeAdaptor(envelope)):
            await msg.ack()
            return
        parent = propagate.extract(dict(msg.headers or {}))
        with tracer.start_as_current_span(
            f"consume {envelope.topic}", context=parent, kind=trace.SpanKind.CONSUMER
        ):
            try:
                await handler(envelope)
            except Exception:
                log.exception("consumer %s: handler failed on %s", durable, envelope.topic)
                await msg.nak(delay=1.0)
                return
        await msg.ack()
