"""The event bus against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest
from opentelemetry import trace

from shared import context, telemetry, typeurl
from shared.api.containerd.events import namespace_pb2, task_pb2
from shared.errors import InvalidArgument
from shared.events.bus import EventBus
from shared.events.envelope import Envelope, EnvelopeAdaptor, subject_for
from tests.harness import NatsServer


def _bus(nats: NatsServer) -> EventBus:
    # A stream of the test's own, so tests do not see each other's events.
    tag = uuid.uuid4().hex[:10]
    return EventBus(
        nats.url, stream=f"T{tag.upper()}", name="test", subject_prefix=f"t{tag}.events"
    )


async def _collect(bus: EventBus, filters: list[str], n: int, out: list[Envelope]) -> None:
    async for envelope in bus.subscribe(filters):
        out.append(envelope)
        if len(out) == n:
            return


def test_subjects() -> None:
    assert subject_for("default", "/tasks/exit") == "berth.events.default.tasks.exit"
    assert subject_for("k8s.io", "/images/create") == "berth.events.k8s.io.images.create"


def test_publish_and_filtered_subscribe(nats: NatsServer) -> None:
    async def main() -> list[Envelope]:
        bus = _bus(nats)
        await bus.connect()
        got: list[Envelope] = []
        try:
            reader = asyncio.create_task(
                _collect(
                    bus, ['topic=="/tasks/exit",event.container_id==c2', "namespace==other"], 2, got
                )
            )
            await asyncio.sleep(0.2)  # let the subscription reach the server
            await bus.publish(
                "/tasks/exit", task_pb2.TaskExit(container_id="c1"), namespace="default"
            )
            await bus.publish("/tasks/exit", task_pb2.TaskExit(container_id="c2", exit_status=7),
                              namespace="default")  # fmt: skip
            with context.using(namespace="other"):
                await bus.publish("/namespaces/create", namespace_pb2.NamespaceCreate(name="x"))
            await asyncio.wait_for(reader, 10)
        finally:
            await bus.close()
        return got

    got = asyncio.run(main())
    assert [e.topic for e in got] == ["/tasks/exit", "/namespaces/create"]
    first = typeurl.unpack(got[0].event)
    assert isinstance(first, task_pb2.TaskExit)
    assert (first.container_id, first.exit_status) == ("c2", 7)
    assert got[0].event.type_url == "containerd.events.TaskExit"  # containerd's bare type URL
    assert got[1].namespace == "other"


def test_envelope_adaptor_fields() -> None:
    bus = EventBus("nats://unused")
    envelope = bus.envelope(
        "/namespaces/create",
        namespace_pb2.NamespaceCreate(name="n", labels={"a.b": "c"}),
        "default",
    )
    adaptor = EnvelopeAdaptor(envelope)
    assert adaptor.field(["event", "name"]) == ("n", True)
    assert adaptor.field(["event", "labels", "a.b"]) == ("c", True)
    assert adaptor.field(["event", "labels", "zz"]) == ("", False)
    assert adaptor.field(["event", "nope"]) == ("", False)
    assert adaptor.field(["namespace"]) == ("default", True)


def test_bad_topic_namespace_and_filter(nats: NatsServer) -> None:
    async def main() -> None:
        bus = _bus(nats)
        await bus.connect()
        try:
            with pytest.raises(InvalidArgument):
                await bus.publish("no-slash", task_pb2.TaskExit(), namespace="default")
            with pytest.raises(InvalidArgument):
                await bus.publish("/tasks/exit", task_pb2.TaskExit(), namespace="bad/ns")
            with pytest.raises(InvalidArgument):
                await anext(bus.subscribe(["topic=="]))
        finally:
            await bus.close()

    asyncio.run(main())


def test_trace_context_travels_in_headers(nats: NatsServer) -> None:
    telemetry.setup("test")
    tracer = trace.get_tracer("test")

    async def main() -> tuple[str, str]:
        bus = _bus(nats)
        await bus.connect()
        nc = await _raw_connect(bus.url)
        sub = await nc.subscribe(f"{bus.subject_prefix}.default.tasks.start")
        await nc.flush()  # the server knows the subscription before we publish
        try:
            with tracer.start_as_current_span("caller") as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                await bus.publish("/tasks/start", task_pb2.TaskStart(container_id="c"),
                                  namespace="default")  # fmt: skip
            msg = await sub.next_msg(timeout=30)  # generous: the machine may be busy
        finally:
            await nc.close()
            await bus.close()
        return trace_id, msg.headers["traceparent"]

    trace_id, traceparent = asyncio.run(main())
    assert traceparent.split("-")[1] == trace_id


async def _raw_connect(url: str) -> nats.aio.client.Client:
    return await nats.connect(url)


def test_durable_consumer_catches_up_after_being_down(nats: NatsServer) -> None:
    async def consume_until(bus: EventBus, durable: str, n: int) -> list[str]:
        seen: list[str] = []
        done = asyncio.Event()

        async def handler(envelope: Envelope) -> None:
            msg = typeurl.unpack(envelope.event)
            assert isinstance(msg, task_pb2.TaskExit)
            seen.append(msg.container_id)
            if len(seen) == n:
                done.set()

        task = asyncio.create_task(bus.consume(durable, handler, filters=['topic=="/tasks/exit"']))
        try:
            await asyncio.wait_for(done.wait(), 10)
            await asyncio.sleep(0.3)  # nothing more should arrive
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return seen

    async def main() -> tuple[list[str], list[str]]:
        bus = _bus(nats)
        await bus.connect()
        try:
            # Published while no consumer exists: kept by the stream.
            for cid in ("a", "b"):
                await bus.publish(
                    "/tasks/exit", task_pb2.TaskExit(container_id=cid), namespace="default"
                )
            await bus.publish(
                "/tasks/start", task_pb2.TaskStart(container_id="x"), namespace="default"
            )
            first = await consume_until(bus, "gc", 2)
            # The consumer is down again; more happens; it resumes after its last ack.
            await bus.publish(
                "/tasks/exit", task_pb2.TaskExit(container_id="c"), namespace="default"
            )
            second = await consume_until(bus, "gc", 1)
        finally:
            await bus.close()
        return first, second

    first, second = asyncio.run(main())
    assert first == ["a", "b"]
    assert second == ["c"]


def test_outbox_sends_in_order_and_flushes_at_shutdown(nats: NatsServer) -> None:
    from shared.events.outbox import Outbox

    async def main() -> list[str]:
        bus = _bus(nats)
        await bus.connect()
        got: list[Envelope] = []
        try:
            reader = asyncio.create_task(_collect(bus, [], 5, got))
            await asyncio.sleep(0.2)
            outbox = Outbox(bus)
            sender = asyncio.create_task(outbox.run())
            for cid in ("1", "2", "3"):
                outbox.put("/tasks/exit", task_pb2.TaskExit(container_id=cid), namespace="default")
            while len(got) < 3:
                await asyncio.sleep(0.05)
            sender.cancel()  # shutdown: the loop is gone, the queue is not empty
            with pytest.raises(asyncio.CancelledError):
                await sender
            for cid in ("4", "5"):
                outbox.put("/tasks/exit", task_pb2.TaskExit(container_id=cid), namespace="default")
            await outbox.flush()
            await asyncio.wait_for(reader, 10)
        finally:
            await bus.close()
        return [typeurl.unpack_as(e.event, task_pb2.TaskExit).container_id for e in got]

    assert asyncio.run(main()) == ["1", "2", "3", "4", "5"]
