"""The client library's images against a real suite and registry: pull with progress, unpack,
push, import and export, and the errors a user meets first."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import berth
from shared.unpack import chain_ids
from tests.harness import Suite
from tests.integration.client_support import clean_namespace, ctr
from tests.testimages import Images, Registry

NS = "client-images"


@pytest.fixture(scope="module")
def client(suite: Suite) -> Iterator[berth.Client]:
    with berth.Client(suite.address, namespace=NS) as c:
        yield c
        clean_namespace(c)


def test_pull_reports_progress_and_records_the_image(
    client: berth.Client, suite: Suite, registry: Registry, testimages: Images
) -> None:
    events: list[berth.Progress] = []
    image = client.pull(registry.ref("multilayer"), progress=events.append)

    assert image.name == registry.ref("multilayer")
    assert image.target.digest == testimages.digest("multilayer")
    kinds = [e.event for e in events]
    assert kinds[0] == "resolving" and kinds[-1] == "complete"
    layers = testimages.layers("multilayer")
    for layer in layers:
        name = f"layer-{layer.digest}"
        done = [e for e in events if e.name == name and e.event in ("downloaded", "exists")]
        assert done and done[-1].progress == done[-1].total == layer.size
        assert any(e.name == name and e.event == "unpacked" for e in events)
    # What the image says about itself is what the registry holds.
    config = image.config()
    assert config == testimages.config("multilayer")
    assert image.rootfs() == [layer.diff_id for layer in layers]
    assert image.chain_id() == chain_ids([layer.diff_id for layer in layers])[-1]
    assert image.is_unpacked()
    assert image.size() == sum(layer.size for layer in layers) + image.config_descriptor().size + (
        image.target.size
    )
    # ctr sees the same image.
    listing = ctr(suite, NS, "images", "ls", "-q").stdout.split()
    assert registry.ref("multilayer") in listing


def test_pull_without_unpack_then_unpack_on_the_client(
    client: berth.Client, suite: Suite, registry: Registry
) -> None:
    ns = "client-images-unpack"  # snapshots are per namespace: none here yet
    with berth.namespace(ns):
        image = client.pull(registry.ref("multilayer-zstd"), unpack=False)
        assert not image.is_unpacked()
        chain = image.unpack()
        assert chain == image.chain_id()
        assert image.is_unpacked()
        assert chain in ctr(suite, ns, "snapshots", "ls").stdout
        # The snapshot is reachable from the image: a collection now keeps it.
        client.create_lease().delete(sync=True)
        client.snapshot_service().stat(chain)
        clean_namespace(client)


def test_pull_a_platform_of_an_index(client: berth.Client, registry: Registry) -> None:
    image = client.pull(registry.ref("multiarch"), platform="linux/arm64", unpack=False)
    assert image.platform == berth.Platform("linux", "arm64", "v8")
    assert image.config()["architecture"] == "arm64"
    assert image.config()["config"]["Labels"] == {"org.example.platform": "linux/arm64/v8"}


def test_list_get_tag_and_delete(client: berth.Client, registry: Registry) -> None:
    image = client.pull(registry.ref("busybox"))
    tagged = client.create_image("berth.test/tags/busybox:copy", image.target, {"a": "b"})
    assert tagged.labels == {"a": "b"}
    names = [i.name for i in client.list_images("name~=berth.test/tags/")]
    assert names == ["berth.test/tags/busybox:copy"]
    with pytest.raises(berth.AlreadyExists):
        client.create_image("berth.test/tags/busybox:copy", image.target)
    assert tagged.set_labels({"a": "", "c": "d"}) == {"c": "d"}
    assert client.get_image(tagged.name).labels == {"c": "d"}
    tagged.delete()
    with pytest.raises(berth.NotFound):
        client.get_image(tagged.name)


def test_push_then_pull_back(client: berth.Client, registry: Registry, testimages: Images) -> None:
    source = client.pull(registry.ref("busybox"))
    remote = registry.ref("client-pushed")
    events: list[berth.Progress] = []
    client.push(remote, source, progress=events.append)
    assert events[-1].event == "complete"
    with berth.namespace("client-images-pushed"):
        pulled = client.pull(remote)
        assert pulled.target.digest == testimages.digest("busybox")
        clean_namespace(client)


def test_export_and_import_round_trip(client: berth.Client, registry: Registry) -> None:
    image = client.pull(registry.ref("busybox"))
    archive = io.BytesIO()
    client.export(archive, [image.name])
    with berth.namespace("client-images-import"):
        archive.seek(0)
        imported = client.import_(archive)
        assert [i.name for i in imported] == [image.name]
        assert imported[0].target.digest == image.target.digest
        assert imported[0].is_unpacked()
        clean_namespace(client)


def test_export_to_a_path_is_an_oci_layout(
    client: berth.Client, registry: Registry, tmp_path: Path
) -> None:
    import tarfile

    image = client.pull(registry.ref("busybox"))
    path = tmp_path / "busybox.tar"
    client.export(path, image.name)
    with tarfile.open(path) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert index["manifests"][0]["digest"] == image.target.digest


def test_unknown_image_is_not_found(client: berth.Client, registry: Registry) -> None:
    with pytest.raises(berth.NotFound):
        client.get_image("berth.test/nothing:here")
    with pytest.raises(berth.NotFound, match="not found"):
        client.pull(registry.ref("no-such-image"))


@pytest.mark.parametrize(
    "ref", ["not a reference", "busybox", "host/Repo:tag", "host/repo@sha256:abc", ""]
)
def test_bad_reference_is_invalid_argument(client: berth.Client, ref: str) -> None:
    with pytest.raises(berth.InvalidArgument):
        client.pull(ref)


def test_no_suite_at_the_address_is_unavailable_with_a_clear_message(tmp_path: Path) -> None:
    address = str(tmp_path / "nothing.sock")
    with berth.Client(address) as nowhere:
        with pytest.raises(berth.Unavailable, match=f"cannot reach berth at {address}"):
            nowhere.version()
        with pytest.raises(berth.Unavailable, match="is berthd running"):
            nowhere.pull("127.0.0.1:5000/x/y:latest")


def test_address_and_namespace_defaults(monkeypatch: pytest.MonkeyPatch, suite: Suite) -> None:
    monkeypatch.setenv("BERTH_ADDRESS", suite.address)
    with berth.Client() as c:
        assert c.address == suite.address
        assert c.namespace == "default"
        assert c.version()[0].startswith("1.7")
    monkeypatch.delenv("BERTH_ADDRESS")
    with berth.Client() as default:
        assert default.address == berth.DEFAULT_ADDRESS == "/run/berth/berth.sock"
    with pytest.raises(berth.InvalidArgument):
        berth.Client(suite.address, namespace="not valid")
    assert os.environ.get("BERTH_ADDRESS") is None
