"""Events a service announces after its changes commit, sent in order off the request path.

A handler calls :meth:`Outbox.put` once its transaction committed and returns
at once; one background loop (owned by the service process) sends the queue
in order and keeps retrying while the bus is away, so a slow or restarting
NATS never slows or fails an RPC. If the bus stays away until the queue is
full, new events are dropped with an error in the log: consumers that decide
state reconcile from the database as well (ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf import message
from opentelemetry import context as otel_context

from shared import context as request_context
from shared.events.bus import EventBus
from shared.events.envelope import Envelope

log = logging.getLogger(__name__)


class Outbox:
    RETRY_DELAY = 0.5

    def __init__(self, bus: EventBus, maxsize: int = 10_000) -> None:
        self._bus = bus
        # Each event travels with the trace context of the request that caused it.
        self._queue: asyncio.Queue[tuple[Envelope, otel_context.Context]] = asyncio.Queue(maxsize)
        self._current: tuple[Envelope, otel_context.Context] | None = None  # taken, not yet sent
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s, once it runs

    def put(self, topic: str, event: message.Message, *, namespace: str | None = None) -> None:
        """Queue ``event``; the namespace defaults to the current request's.

        Safe from worker threads too (pulls, imports): the event joins the queue in
        the loop's thread, in the order of the calls from each thread.
        """
        ns = namespace or request_context.require_namespace()
        item = (self._bus.envelope(topic, event, ns), otel_context.get_current())
        loop = self._loop
        if loop is not None and not _running_in(loop):
            loop.call_soon_threadsafe(self._enqueue, item)
        else:
            self._enqueue(item)

    def _enqueue(self, item: tuple[Envelope, otel_context.Context]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.error("event queue full: dropping %s in %s", item[0].topic, item[0].namespace)

    async def run(self) -> None:
        """Send queued events forever, in order (run it as a background loop)."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._current = await self._queue.get()
            while not await self._bus.send(*self._current):
                await asyncio.sleep(self.RETRY_DELAY)
            self._current = None
            self._queue.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        """At shutdown, after :meth:`run` was cancelled: send what is still queued."""
        deadline = asyncio.get_running_loop().time() + timeout
        pending = [self._current] if self._current is not None else []
        self._current = None
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for sent, (envelope, parent) in enumerate(pending):
            too_late = asyncio.get_running_loop().time() > deadline
            if too_late or not await self._bus.send(envelope, parent):
                log.warning("%d events not sent at shutdown", len(pending) - sent)
                return


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
