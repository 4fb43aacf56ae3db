"""When the garbage collector runs: soon after deletions, and on a schedule.

Deletions anywhere in the suite arrive as events (``/images/delete``,
``/containers/delete``, ``/snapshot/remove``, ``/content/delete``, lease
deletions here); a collection follows after a short quiet period so that a
burst of deletions makes one run. A durable consumer means deletions made
while this service was down still lead to a collection when it is back.
``collect_now`` serves ``sync`` deletions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.images.gc import Collector, Plan
from shared.events.bus import EventBus
from shared.events.envelope import Envelope

log = logging.getLogger(__name__)

TRIGGER_TOPICS = ("/images/delete", "/containers/delete", "/snapshot/remove", "/content/delete")


class GcScheduler:
    def __init__(
        self, collector: Collector, *, interval: float = 300.0, delay: float = 1.0
    ) -> None:
        self._collector = collector
        self._interval = interval
        self._delay = delay
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()

    def trigger(self) -> None:
        self._wanted.set()

    async def collect_now(self, dry_run: bool = False) -> Plan:
        async with self._lock:
            return await asyncio.to_thread(self._collector.collect, dry_run)

    async def run(self) -> None:
        """Collect forever: after triggers (debounced) and every ``interval`` seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self._interval)
            await asyncio.sleep(self._delay)
            self._wanted.clear()
            try:
                await self.collect_now()
            except Exception:
                # The next trigger or tick tries again; a failed run removes nothing half-way
                # that a later run cannot finish.
                log.exception("garbage collection failed")

    async def follow_deletions(self, bus: EventBus) -> None:
        async def on_event(envelope: Envelope) -> None:
            self.trigger()

        filters = [f'topic=="{topic}"' for topic in TRIGGER_TOPICS]
        await bus.consume("berth-images-gc", on_event, filters=filters)
