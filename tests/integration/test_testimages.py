"""The test-image fixtures themselves: the built layout, the umoci oracle, the registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from tests import testimages as ti
from tests.harness import pid_alive
from tests.testimages import Images, Registry

REFS = ["busybox", "multilayer", "multilayer-zstd", "multiarch"]


def test_builder_found_and_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert (ti.testimages_dir() / "build.sh").is_file()
    monkeypatch.setenv(ti.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ti.ImagesError, match=f"tried {tmp_path}/nowhere/build.sh"):
        ti.testimages_dir()


def check_layout(images: Images, refs: list[str]) -> None:
    index = images.index()
    names = [d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]]
    assert names == refs
    assert images.refs() == refs
    for d in index["manifests"]:
        ref = d["annotations"]["org.opencontainers.image.ref.name"]
        assert (d["digest"], d["mediaType"], d["size"]) == (
            images.digest(ref), images.media_type(ref), images.size(ref)
        )  # fmt: skip
        assert images.archive(ref).is_file()
    assert images.verify() == []


def test_layout_has_the_refs_of_images_tsv(testimages: Images) -> None:
    check_layout(testimages, REFS)
    assert testimages.media_type("multiarch") == ti.MT_INDEX
    assert testimages.digest("busybox").startswith("sha256:")


def test_big_layout_has_five_refs(testimages_big: Images) -> None:
    check_layout(testimages_big, [*REFS, "big"])
    assert testimages_big.out != ti.build(no_big=True).out
    assert [layer.media_type for layer in testimages_big.layers("big")] == [ti.MT_LAYER_GZIP] * 5


@pytest.mark.parametrize(("ref", "media_type"),
                         [("multilayer", ti.MT_LAYER_GZIP), ("multilayer-zstd", ti.MT_LAYER_ZSTD)])  # fmt: skip
def test_multilayer_layers_match_their_diff_ids(
    testimages: Images, ref: str, media_type: str
) -> None:
    layers = testimages.layers(ref)
    assert len(layers) == 5
    diff_ids = testimages.config(ref)["rootfs"]["diff_ids"]
    assert [layer.diff_id for layer in layers] == diff_ids
    for layer in layers:
        assert layer.media_type == media_type
        assert layer.path.stat().st_size == layer.size
        assert ti.sha256_file(layer.path) == layer.digest
        assert layer.compute_diff_id() == layer.diff_id
    # same uncompressed layers, different compression
    assert diff_ids == testimages.config("multilayer")["rootfs"]["diff_ids"]


def test_multiarch_resolves_to_linux_amd64_by_default(testimages: Images) -> None:
    index = testimages.json_blob(testimages.digest("multiarch"))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    amd64 = testimages.resolve("multiarch")
    assert amd64.digest == index["manifests"][0]["digest"]
    assert testimages.config("multiarch")["architecture"] == "amd64"
    assert testimages.config("multiarch")["config"]["Labels"] == {
        "org.example.platform": "linux/amd64"
    }
    for platform in ["linux/arm64", "linux/arm64/v8"]:
        config = testimages.config("multiarch", platform)
        assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    with pytest.raises(LookupError, match="linux/s390x"):
        testimages.manifest("multiarch", "linux/s390x")
    with pytest.raises(LookupError, match="linux/arm64/v7"):
        testimages.manifest("multiarch", "linux/arm64/v7")
    # a plain manifest ignores the platform
    assert testimages.resolve("busybox").digest == testimages.digest("busybox")


def test_archive_is_shaped_like_ctr_export(testimages: Images) -> None:
    with tarfile.open(testimages.archive("multilayer")) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        [entry] = json.load(f)["manifests"]
        names = set(tar.getnames())
    assert entry["digest"] == testimages.digest("multilayer")
    assert (
        entry["annotations"]["io.containerd.image.name"] == "localhost/testimages/multilayer:latest"
    )
    blobs = {
        f"blobs/sha256/{layer.digest.split(':')[1]}" for layer in testimages.layers("multilayer")
    }
    assert blobs <= names


def test_a_corrupt_cache_is_detected_and_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "out"
    images = ti.build(no_big=True, out=out)
    layer = images.layers("busybox")[0].path
    manifest = images.blob_path(images.digest("multilayer"))
    good_layer, good_manifest = layer.read_bytes(), manifest.read_bytes()

    # caught by build(): every blob is hashed
    layer.write_bytes(good_layer[:-10] + b"corrupted!")
    ti._verified.clear()  # as in a new test process
    images = ti.build(no_big=True, out=out)
    assert layer.read_bytes() == good_layer

    # caught on read: a blob changed after build() checked it
    manifest.write_bytes(good_manifest.replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    assert images.manifest("multilayer")["schemaVersion"] == 2
    assert manifest.read_bytes() == good_manifest

    # an archive whose blob is damaged
    archive = out / "archives" / "busybox.tar"
    with tarfile.open(archive) as tar:
        offset = max(tar.getmembers(), key=lambda m: m.size).offset_data
    data = bytearray(archive.read_bytes())
    data[offset + 100] ^= 0xFF  # inside the layer blob
    archive.write_bytes(bytes(data))
    assert ti._archive_problem(archive, images.digest("busybox")) is not None
    assert images.archive("busybox") == archive
    assert ti._archive_problem(archive, images.digest("busybox")) is None


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="umoci keeps uid 1000 only as root")
def test_umoci_unpack_of_multilayer_matches_containerd(testimages: Images, tmp_path: Path) -> None:
    rootfs = ti.umoci_unpack(testimages, "multilayer", tmp_path / "bundle")
    assert rootfs == tmp_path / "bundle" / "rootfs"
    assert ti.tree_listing(rootfs) == ti.containerd_tree()
    # not in the listing: see umoci_unpack's docstring
    assert (rootfs / "opt/app/data/keep-hardlink.txt").stat().st_nlink == 1
    assert rootfs.stat().st_mtime == 0
    assert (rootfs / "opt/app/data").stat().st_mtime == 1704067200


def test_umoci_cannot_unpack_zstd(testimages: Images, tmp_path: Path) -> None:
    with pytest.raises(ti.ImagesError, match=r"tar\+zstd"):
        ti.umoci_unpack(testimages, "multilayer-zstd", tmp_path / "bundle")


@pytest.mark.parametrize("ref", REFS)
def test_registry_serves_the_manifests(registry: Registry, testimages: Images, ref: str) -> None:
    url = f"{registry.url}/v2/testimages/{ref}/manifests/latest"
    response = httpx.get(url, headers={"Accept": testimages.media_type(ref)})
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Content-Digest"] == testimages.digest(ref)
    assert response.headers["Content-Type"] == testimages.media_type(ref)
    assert registry.ref(ref) == f"127.0.0.1:{registry.port}/testimages/{ref}:latest"


def test_skopeo_inspects_the_registry(registry: Registry, testimages: Images) -> None:
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.ref('busybox')}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Digest"] == testimages.digest("busybox")
    assert info["Layers"] == [layer.digest for layer in testimages.layers("busybox")]


def test_registry_stop_leaves_nothing_behind() -> None:
    with Registry(None) as registry:
        pid, state, port = registry.pid, registry.state, registry.port
        assert pid is not None and pid_alive(pid)
        assert httpx.get(f"{registry.url}/v2/").status_code == 200
        assert not (state / "storage" / "docker").exists()  # nothing pushed
    assert not pid_alive(pid)
    assert not state.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert registry not in ti._running


def test_registry_is_stopped_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError, match="test failure"), Registry(None) as registry:
        pid = registry.pid
        raise RuntimeError("test failure")
    assert pid is not None and not pid_alive(pid)
    assert not registry.state.exists()
