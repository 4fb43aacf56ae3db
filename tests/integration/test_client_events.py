"""Events and leases through the client library, against a real suite."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator

import pytest

import berth
from berth.image import write_blob
from shared.api.containerd.events import task_pb2 as task_events
from tests.harness import Suite
from tests.integration.client_support import clean_namespace, run
from tests.testimages import Registry

NS = "client-events"


@pytest.fixture(scope="module")
def client(suite: Suite) -> Iterator[berth.Client]:
    with berth.Client(suite.address, namespace=NS) as c:
        yield c
        clean_namespace(c)


@pytest.fixture(scope="module")
def busybox(client: berth.Client, registry: Registry) -> berth.Image:
    return client.pull(registry.ref("busybox"))


class Listener:
    """A subscription read by a thread: live once constructed (subscribe() waits for that)."""

    def __init__(self, client: berth.Client, *filters: str) -> None:
        self.subscription = client.subscribe(*filters)
        self.events: queue.Queue[berth.Event] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.subscription:
                self.events.put(event)
        except BaseException as e:
            self.error = e

    def until(self, topic: str, timeout: float = 30) -> list[berth.Event]:
        seen = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1].topic != topic:
            seen.append(self.events.get(timeout=max(0.1, deadline - time.monotonic())))
        return seen

    def close(self) -> None:
        self.subscription.close()
        self._thread.join(10)
        assert not self._thread.is_alive()


def test_a_run_as_events(client: berth.Client, busybox: berth.Image) -> None:
    listener = Listener(client, f"namespace=={NS}")
    try:
        code, _, _ = run(client, "ev-run", busybox, "sh", "-c", "exit 3")
        assert code == 3
        events = listener.until("/containers/delete")
    finally:
        listener.close()
    assert listener.error is None
    mine = [e for e in events if e.topic.startswith(("/containers/", "/tasks/"))]
    topics = [e.topic for e in mine]
    # Start and exit come from different places and may cross; the rest is ordered.
    assert topics[:2] == ["/containers/create", "/tasks/create"]
    assert sorted(topics[2:4]) == ["/tasks/exit", "/tasks/start"]
    assert topics[4:] == ["/tasks/delete", "/containers/delete"]
    exit_event = next(e.event for e in mine if e.topic == "/tasks/exit")
    assert isinstance(exit_event, task_events.TaskExit)
    assert (exit_event.container_id, exit_event.exit_status) == ("ev-run", 3)
    assert all(e.namespace == NS and e.timestamp is not None for e in mine)


def test_filters_narrow_the_stream(client: berth.Client, busybox: berth.Image) -> None:
    listener = Listener(client, f'topic=="/tasks/exit",namespace=={NS}')
    try:
        run(client, "ev-filter", busybox, "true")
        events = listener.until("/tasks/exit")
    finally:
        listener.close()
    assert [e.topic for e in events] == ["/tasks/exit"]


def test_a_bad_filter_is_invalid(client: berth.Client) -> None:
    with client.subscribe("topic==") as subscription, pytest.raises(berth.InvalidArgument):
        next(iter(subscription))


def test_lease_keeps_content_until_it_ends(client: berth.Client) -> None:
    data = os.urandom(256)
    with client.lease(labels={"purpose": "test"}) as lease:
        desc = write_blob(client, data, "application/octet-stream", "lease-test", {})
        assert berth.Resource(desc.digest, "content") in lease.resources()
        held = {held.id: held for held in client.leases()}[lease.id]
        assert held.labels["purpose"] == "test"
        assert "containerd.io/gc.expire" in held.labels
        client.create_lease().delete(sync=True)  # a collection, now
        assert client.content_store().info(desc.digest).size == len(data)
    assert lease.id not in [held.id for held in client.leases()]
    client.create_lease().delete(sync=True)
    with pytest.raises(berth.NotFound):
        client.content_store().info(desc.digest)


def test_leases_nest_and_can_last(client: berth.Client) -> None:
    with client.lease("outer-lease", expire=None) as outer:
        assert "containerd.io/gc.expire" not in outer.labels
        with client.lease() as inner:
            desc = write_blob(client, os.urandom(64), "application/octet-stream", "inner", {})
            assert berth.Resource(desc.digest, "content") in inner.resources()
        # Calls carried the inner lease only.
        assert berth.Resource(desc.digest, "content") not in outer.resources()
    kept = client.create_lease("kept-lease")
    try:
        assert kept.id in [held.id for held in client.leases("id==kept-lease")]
    finally:
        kept.delete()
