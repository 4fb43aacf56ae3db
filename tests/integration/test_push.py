"""Server-side push through the Transfer service to a real registry, checked with skopeo."""

from __future__ import annotations

import json
import subprocess

import pytest

from shared import context
from shared.errors import InvalidArgument, NotFound, Unauthenticated
from shared.oci import parse_platform
from shared.proxy.transfer import TransferClient
from shared.rpc.sync_client import channel
from tests.harness import Suite
from tests.integration.test_pull import image_digests, pull
from tests.registry_fronts import TokenFront
from tests.testimages import Images, Registry


def push(suite: Suite, ns: str, name: str, target: str, **kwargs: object) -> list[object]:
    events: list[object] = []
    with context.using(namespace=ns):
        TransferClient(channel(suite.address)).push(name, target, progress=events.append, **kwargs)  # type: ignore[arg-type]
    return events


def skopeo_digest(ref: str) -> str:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    import hashlib

    return "sha256:" + hashlib.sha256(out).hexdigest()


@pytest.mark.parametrize("ref", ["multilayer", "multiarch"])
def test_push_to_another_repository_and_back(
    suite: Suite, registry: Registry, testimages: Images, ref: str
) -> None:
    ns = f"push-{ref}"
    both = [parse_platform("linux/amd64"), parse_platform("linux/arm64")]
    pull(suite, ns, registry.ref(ref), platforms=both)  # every platform, so the index is whole
    target = f"{registry.address}/pushed/{ref}:copy"
    events = push(suite, ns, registry.ref(ref), target)
    assert any(
        getattr(e, "event", "") == "mounted" for e in events
    )  # same registry: mounted across
    assert skopeo_digest(target) == testimages.digest(ref)
    inspected = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{target}"],
        check=True, capture_output=True, text=True).stdout)  # fmt: skip
    assert inspected["Digest"] == testimages.digest(ref)
    # Pull it back somewhere else: the same image comes out.
    pull(suite, f"{ns}-back", target)
    assert image_digests(suite, f"{ns}-back")[target] == testimages.digest(ref)


def test_push_of_an_index_missing_a_platform_is_refused_clearly(
    suite: Suite, registry: Registry
) -> None:
    ns = "push-partial"
    pull(suite, ns, registry.ref("multiarch"))  # the host's platform only
    with pytest.raises(InvalidArgument, match="MANIFEST_BLOB_UNKNOWN"):
        push(suite, ns, registry.ref("multiarch"), f"{registry.address}/pushed/partial:1")


def test_push_needs_credentials_and_an_existing_image(suite: Suite, registry: Registry) -> None:
    ns = "push-auth"
    pull(suite, ns, registry.ref("busybox"))
    users = {"carol": ("pusher", {"pull", "push"})}
    with TokenFront(registry.address, users) as front:
        target = f"{front.address}/carol/busybox:1"
        with pytest.raises(Unauthenticated):
            push(suite, ns, registry.ref("busybox"), target)
        push(
            suite, ns, registry.ref("busybox"), target, credentials=lambda host: ("carol", "pusher")
        )
        assert front.requests("PUT", "/manifests/1")
    with pytest.raises(NotFound):
        push(suite, ns, "no-such-image", f"{registry.address}/x/y:z")
