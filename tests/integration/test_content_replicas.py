"""Two content processes on one blob directory and one database behave as one store."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator

import pytest

from shared import context
from shared.content import Info
from shared.errors import AlreadyExists, NotFound, Unavailable
from shared.proxy.content import ContentProxy
from shared.rpc.sync_client import channel
from tests.conformance.content import digest_of, put, read_all
from tests.harness import NatsServer, ServiceProcess, free_port, short_tempdir

MIB = 1 << 20


@pytest.fixture(params=["sqlite", "postgres"])
def replicas(
    request: pytest.FixtureRequest, nats: NatsServer
) -> Iterator[tuple[ContentProxy, ContentProxy]]:
    root = short_tempdir("berth-replicas-")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{root / 'berth.db'}"
    config = root / "berth.toml"
    config.write_text(
        f'root = "{root / "root"}"\nstate = "{root / "state"}"\n'
        f'[database]\nurl = "{url}"\n[events]\nnats_url = "{nats.url}"\n'
    )
    # One replica on a unix socket, the other on TCP (as in compose and Kubernetes).
    services = [
        ServiceProcess("content", config, str(root / "a.sock"), root / "a.log"),
        ServiceProcess("content", config, f"127.0.0.1:{free_port()}", root / "b.log"),
    ]
    try:
        for service in services:
            service.start()
        channels = [channel(s.listen) for s in services]
        with context.using(namespace="replicas"):
            yield ContentProxy(channels[0]), ContentProxy(channels[1])
        for ch in channels:
            ch.close()
    finally:
        for service in services:
            service.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_read_after_write_across_replicas(replicas: tuple[ContentProxy, ContentProxy]) -> None:
    a, b = replicas
    data = os.urandom(3 * MIB)
    digest = put(a, data, labels={"written-by": "a"})
    assert read_all(b, digest) == data
    assert b.info(digest).labels == {"written-by": "a"}
    b.update(Info(digest, 0, 0, 0, {"seen-by": "b"}), ["labels.seen-by"])
    assert a.info(digest).labels == {"written-by": "a", "seen-by": "b"}
    assert digest in {i.digest for i in a.walk()}
    with pytest.raises(AlreadyExists):
        b.writer("again", expected=digest)
    b.delete(digest)
    with pytest.raises(NotFound):
        a.info(digest)


def test_resume_across_replicas(replicas: tuple[ContentProxy, ContentProxy]) -> None:
    a, b = replicas
    data = os.urandom(5 * MIB)
    digest = digest_of(data)
    w = a.writer("moving-ref", total=len(data), expected=digest)
    w.write(data[: 2 * MIB])
    w.close()
    assert b.status("moving-ref").offset == 2 * MIB
    w = b.writer("moving-ref", total=len(data), expected=digest)
    try:
        assert w.status().offset == 2 * MIB
        w.write(data[2 * MIB :])
        w.commit(len(data), digest)
    finally:
        w.close()
    assert read_all(a, digest) == data
    assert a.list_statuses() == []


def test_one_writer_per_ref_across_replicas(replicas: tuple[ContentProxy, ContentProxy]) -> None:
    a, b = replicas
    w = a.writer("contended")
    try:
        w.write(b"held by a")
        with pytest.raises(Unavailable, match="locked"):
            b.writer("contended")
    finally:
        w.close()
    w = b.writer("contended")  # free once a let go
    w.close()
    b.abort("contended")


def test_no_blob_is_ever_half_visible(replicas: tuple[ContentProxy, ContentProxy]) -> None:
    a, b = replicas
    data = os.urandom(8 * MIB)
    digest = digest_of(data)
    seen: list[str] = []
    stop = threading.Event()
    ns = context.current_namespace()

    def watch() -> None:
        with context.using(namespace=ns):
            while not stop.is_set():
                try:
                    got = read_all(b, digest)
                except NotFound:
                    seen.append("absent")
                    continue
                seen.append("whole" if got == data else f"partial {len(got)}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round_ in range(3):
            w = a.writer(f"visible-{round_}", total=len(data), expected=digest)
            for start in range(0, len(data), MIB):
                w.write(data[start : start + MIB])
            w.commit(len(data), digest)
            w.close()
            a.delete(digest)
    finally:
        stop.set()
        watcher.join(30)
    assert seen, "the watcher never ran"
    assert set(seen) <= {"absent", "whole"}, [s for s in seen if s.startswith("partial")]


def test_commit_and_delete_race_across_namespaces(
    replicas: tuple[ContentProxy, ContentProxy],
) -> None:
    """Deleting in one namespace never removes bytes another namespace just committed."""
    a, b = replicas
    data = os.urandom(256 * 1024)
    digest = digest_of(data)
    errors: list[BaseException] = []

    def churn(store: ContentProxy, namespace: str, rounds: int) -> None:
        try:
            with context.using(namespace=namespace):
                for i in range(rounds):
                    put(store, data, ref=f"race-{i}")
                    store.delete(digest)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(a, "ns-a", 15)),
               threading.Thread(target=churn, args=(b, "ns-b", 15))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with context.using(namespace="ns-keep"):
        put(a, data)
        assert read_all(b, digest) == data
