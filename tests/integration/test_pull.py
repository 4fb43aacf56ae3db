"""Server-side pull through the Transfer service, against a real registry (and fronts for it)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import context, typeurl
from shared import mount as mounting
from shared.api.containerd.events import image_pb2 as image_events
from shared.errors import BerthError, NotFound, Unauthenticated
from shared.oci import parse_platform
from shared.proxy.snapshots import SnapshotterProxy
from shared.proxy.transfer import TransferClient, TransferProgress
from shared.rpc.sync_client import channel
from shared.unpack import chain_ids
from tests.harness import Suite, wait_until
from tests.integration.events_support import subscribed
from tests.registry_fronts import Forwarder, TokenFront
from tests.testimages import Images, Registry, containerd_tree, tree_listing


def pull(suite: Suite, ns: str, ref: str, **kwargs: object) -> list[TransferProgress]:
    events: list[TransferProgress] = []
    with context.using(namespace=ns):
        TransferClient(channel(suite.address)).pull(ref, progress=events.append, **kwargs)  # type: ignore[arg-type]
    return events


def unpacked_tree(
    suite: Suite, ns: str, images: Images, ref: str, tmp: Path, platform: str = "linux/amd64"
) -> str:
    top = chain_ids([lay.diff_id for lay in images.layers(ref, platform)])[-1]
    with context.using(namespace=ns):
        sn = SnapshotterProxy(channel(suite.address), "overlayfs")
        key = f"check-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"
        sn.view(key, top)
        try:
            with mounting.temporary(sn.mounts(key), tmp) as root:
                return tree_listing(root)
        finally:
            sn.remove(key)


def image_digests(suite: Suite, ns: str) -> dict[str, str]:
    out = suite.ctr("images", "ls", namespace=ns).stdout
    return {row.split()[0]: row.split()[2] for row in out.splitlines()[1:] if row.strip()}


@pytest.mark.parametrize("ref", ["busybox", "multilayer", "multilayer-zstd"])
def test_pull_and_unpack(
    suite: Suite, registry: Registry, testimages: Images, ref: str, tmp_path: Path
) -> None:
    ns = f"pull-{ref}"
    events = pull(suite, ns, registry.ref(ref))
    assert image_digests(suite, ns)[registry.ref(ref)] == testimages.digest(ref)
    assert events[0].event == "resolving"
    assert events[-1].event == "complete"
    assert {e.name for e in events if e.event == "unpacked"} == {
        f"layer-{lay.digest}" for lay in testimages.layers(ref)
    }
    tree = unpacked_tree(suite, ns, testimages, ref, tmp_path)
    if ref.startswith("multilayer"):
        assert tree == containerd_tree()
    else:
        assert "f 0755 0:0" in tree
        assert " bin/busybox" in tree


def test_multiplatform_pull_picks_a_platform(
    suite: Suite, registry: Registry, testimages: Images, tmp_path: Path
) -> None:
    pull(suite, "mp-default", registry.ref("multiarch"))
    assert "/etc/platform" not in unpacked_tree(
        suite, "mp-default", testimages, "multiarch", tmp_path
    )  # listed relative
    default = unpacked_tree(suite, "mp-default", testimages, "multiarch", tmp_path)
    assert " etc/platform" in default
    pull(suite, "mp-arm", registry.ref("multiarch"), platforms=[parse_platform("linux/arm64")])
    arm = unpacked_tree(suite, "mp-arm", testimages, "multiarch", tmp_path, "linux/arm64")
    # The arm64 entry's /etc/platform says so (the builder writes the platform into it).
    assert arm != default


def test_second_pull_transfers_no_blob(suite: Suite, registry: Registry) -> None:
    with Forwarder(registry.address) as front:
        ref = f"{front.address}/testimages/multilayer:latest"
        pull(suite, "pull-twice", ref)
        first = len(front.requests("GET", "/blobs/"))
        assert first >= 6  # config and five layers
        pull(suite, "pull-twice", ref)
        assert len(front.requests("GET", "/blobs/")) == first


def test_token_auth(suite: Suite, registry: Registry) -> None:
    users = {"alice": ("wonderland", {"pull"})}
    with TokenFront(registry.address, users) as front:
        ref = f"{front.address}/testimages/busybox:latest"
        with pytest.raises(Unauthenticated):
            pull(suite, "token-anon", ref)
        pull(suite, "token", ref, credentials=lambda host: ("alice", "wonderland"))
        assert ref in image_digests(suite, "token")
        assert front.token_requests(), "the pull never asked the token service"
        with pytest.raises(BerthError):
            pull(suite, "token-bad", ref, credentials=lambda host: ("alice", "wrong"))


def test_basic_auth(suite: Suite, registry: Registry) -> None:
    users = {"bob": ("builder", {"pull"})}
    with TokenFront(registry.address, users, basic=True) as front:
        ref = f"{front.address}/testimages/busybox:latest"
        with pytest.raises(Unauthenticated):
            pull(suite, "basic-anon", ref)
        pull(suite, "basic", ref, credentials=lambda host: ("bob", "builder"))
        assert ref in image_digests(suite, "basic")


def test_cut_connections_are_resumed_within_a_pull(
    suite: Suite, registry: Registry, testimages: Images
) -> None:
    big_layer = max(testimages.layers("multilayer"), key=lambda lay: lay.size)
    # Every blob body is cut after 100 kB: each retry asks only for the rest.
    with Forwarder(registry.address, cut_blobs=-1, cut_after=100_000) as front:
        ref = f"{front.address}/testimages/multilayer:latest"
        pull(suite, "cut-within", ref)
        ranges = [r.headers.get("Range", "") for r in front.requests("GET", big_layer.digest)]
    starts = [int(r.removeprefix("bytes=").split("-")[0]) for r in ranges[1:]]
    assert ranges[0] == ""
    assert starts == sorted(starts)
    assert starts[0] > 0
    assert len(ranges) >= big_layer.size // 100_000
    assert image_digests(suite, "cut-within")[ref] == testimages.digest("multilayer")


class _GivesUpOn(Forwarder):
    """Serves 100 kB of one blob, then only 503s for it: the pull fails part-way."""

    def __init__(self, upstream: str, digest: str) -> None:
        super().__init__(upstream, cut_blobs=1, cut_after=100_000)
        self.digest = digest
        self.served = False

    def respond(self, handler: Any, request: Any) -> None:
        if request.method == "GET" and self.digest in request.path:
            if self.served:
                from tests.registry_fronts import registry_error

                handler.reply(registry_error(503, "UNAVAILABLE", "try later"))
                return
            self.served = True
        elif request.method == "GET" and "/blobs/" in request.path:
            handler.reply(self.forward(request))
            return
        super().respond(handler, request)


def test_an_interrupted_pull_resumes_in_the_next(
    suite: Suite, registry: Registry, testimages: Images
) -> None:
    big_layer = max(testimages.layers("multilayer"), key=lambda lay: lay.size)
    ns = "cut-across"
    with _GivesUpOn(registry.address, big_layer.digest) as front:
        ref = f"{front.address}/testimages/multilayer:latest"
        with pytest.raises(BerthError):
            pull(suite, ns, ref)
    assert image_digests(suite, ns) == {}  # nothing half-recorded
    # The next pull fetches only what is missing, continuing the partial layer.
    with Forwarder(front.upstream) as again:
        ref = f"{again.address}/testimages/multilayer:latest"
        pull(suite, ns, ref)
        blob_gets = again.requests("GET", "/blobs/")
    assert [r.path.rsplit("/", 1)[1] for r in blob_gets] == [big_layer.digest]
    assert blob_gets[0].headers.get("Range") == "bytes=100000-"
    assert image_digests(suite, ns)[ref] == testimages.digest("multilayer")


def test_unknown_image_and_bad_reference(suite: Suite, registry: Registry) -> None:
    with pytest.raises(NotFound):
        pull(suite, "missing", registry.ref("no-such-image"))
    with pytest.raises(BerthError, match=r"invalid|reference"):
        pull(suite, "missing", "not a reference")
    assert image_digests(suite, "missing") == {}


@pytest.fixture(scope="module")
def big_registry(testimages_big: Images) -> Iterator[Registry]:
    with Registry(testimages_big) as r:
        yield r


def test_pull_big(suite: Suite, big_registry: Registry, testimages_big: Images) -> None:
    events = pull(suite, "big", big_registry.ref("big"))
    assert image_digests(suite, "big")[big_registry.ref("big")] == testimages_big.digest("big")
    assert sum(1 for e in events if e.event == "unpacked") == 5


def test_a_server_side_pull_announces_the_image(suite: Suite, registry: Registry) -> None:
    ref = registry.ref("busybox")
    with subscribed(suite, "pull-events", "/images/create", "/images/update") as seen:
        pull(suite, "pull-events", ref)
        pull(suite, "pull-events", ref)  # the second finds the record there: an update
        wait_until(lambda: len([e for e in seen if e.topic.startswith("/images/")]) >= 2, 20)
    created = [typeurl.unpack_as(e.event, image_events.ImageCreate) for e in seen
               if e.topic == "/images/create"]  # fmt: skip
    updated = [typeurl.unpack_as(e.event, image_events.ImageUpdate) for e in seen
               if e.topic == "/images/update"]  # fmt: skip
    assert [c.name for c in created] == [ref]
    assert [u.name for u in updated] == [ref]
