"""The CRI ImageService through the suite's socket, driven as kubelet drives it (the
``runtime.v1`` stubs over gRPC): pull from the test registry, status by tag, digest and
ID (the same ID everywhere, as critest's image identifier checks want), list, remove (all
names, idempotent), file system usage, bad input; and what ``ctr -n k8s.io`` sees."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import pytest

from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.api.cri.runtime.v1 import api_pb2_grpc
from shared.config import grpc_target
from tests.harness import Suite
from tests.registry_fronts import TokenFront
from tests.testimages import Images, Registry


@pytest.fixture(scope="module")
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target(suite.address)) as ch:
        yield ch


@pytest.fixture(scope="module")
def images(channel: grpc.Channel) -> api_pb2_grpc.ImageServiceStub:
    return api_pb2_grpc.ImageServiceStub(channel)


@pytest.fixture(scope="module")
def runtime(channel: grpc.Channel) -> api_pb2_grpc.RuntimeServiceStub:
    return api_pb2_grpc.RuntimeServiceStub(channel)


def spec(image: str) -> cri.ImageSpec:
    return cri.ImageSpec(image=image)


def status(images: api_pb2_grpc.ImageServiceStub, image: str) -> cri.ImageStatusResponse:
    return images.ImageStatus(cri.ImageStatusRequest(image=spec(image)), timeout=30)


def k8s_names(suite: Suite) -> set[str]:
    return set(suite.ctr("images", "ls", "-q", namespace="k8s.io").stdout.split())


def test_version_names_berth(runtime: api_pb2_grpc.RuntimeServiceStub) -> None:
    reply = runtime.Version(cri.VersionRequest(version="v1"), timeout=10)
    assert reply.runtime_name == "berth"
    assert reply.runtime_api_version == "v1"
    assert reply.runtime_version and reply.version


def test_status_reports_both_conditions(runtime: api_pb2_grpc.RuntimeServiceStub) -> None:
    conditions = {
        c.type: c for c in runtime.Status(cri.StatusRequest(), timeout=10).status.conditions
    }
    assert set(conditions) == {"RuntimeReady", "NetworkReady"}
    assert conditions["RuntimeReady"].status
    network = conditions["NetworkReady"]  # this suite has no CNI network of its own
    assert network.status or network.reason == "NetworkPluginNotReady"


def test_rpcs_not_served_yet_are_unimplemented_clearly(
    runtime: api_pb2_grpc.RuntimeServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        runtime.CheckpointContainer(cri.CheckpointContainerRequest(container_id="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in (err.value.details() or "")


def test_pull_status_list_remove(
    suite: Suite, images: api_pb2_grpc.ImageServiceStub, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("busybox")
    manifest_digest = testimages.digest("busybox")
    config_digest = testimages.manifest("busybox")["config"]["digest"]

    pulled = images.PullImage(cri.PullImageRequest(image=spec(ref)), timeout=120)
    assert pulled.image_ref == config_digest

    repository = ref.rpartition(":")[0]
    repo_digest = f"{repository}@{manifest_digest}"
    # The names containerd's CRI records, visible to ctr in the k8s.io namespace.
    assert {ref, repo_digest, config_digest} <= k8s_names(suite)

    for name in (ref, repo_digest, config_digest, config_digest.removeprefix("sha256:")):
        image = status(images, name).image
        assert image.id == config_digest, name
        assert image.repo_tags == [ref]
        assert image.repo_digests == [repo_digest]
        assert image.size > 0
        assert image.spec.image == config_digest

    verbose = images.ImageStatus(cri.ImageStatusRequest(image=spec(ref), verbose=True))
    assert '"chainID": "sha256:' in verbose.info["info"]

    listed = images.ListImages(cri.ListImagesRequest(), timeout=30).images
    assert config_digest in [i.id for i in listed]
    filtered = images.ListImages(
        cri.ListImagesRequest(filter=cri.ImageFilter(image=spec(ref))), timeout=30
    ).images
    assert [i.id for i in filtered] == [config_digest]
    streamed = [i.id for r in images.StreamImages(cri.StreamImagesRequest()) for i in r.images]
    assert sorted(streamed) == sorted(i.id for i in listed)

    # A second pull changes nothing and answers the same.
    again = images.PullImage(cri.PullImageRequest(image=spec(ref)), timeout=120)
    assert again.image_ref == config_digest

    images.RemoveImage(cri.RemoveImageRequest(image=spec(ref)), timeout=30)
    assert not status(images, config_digest).HasField("image")
    assert not {ref, repo_digest, config_digest} & k8s_names(suite)
    images.RemoveImage(cri.RemoveImageRequest(image=spec(ref)), timeout=30)  # idempotent


def test_numeric_user_is_a_uid(
    images: api_pb2_grpc.ImageServiceStub, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("multilayer")
    user = testimages.config("multilayer")["config"].get("User", "")
    images.PullImage(cri.PullImageRequest(image=spec(ref)), timeout=120)
    try:
        image = status(images, ref).image
        if user.partition(":")[0].isdigit():
            assert image.uid.value == int(user.partition(":")[0])
            assert image.username == ""
        else:
            assert not image.HasField("uid")
    finally:
        images.RemoveImage(cri.RemoveImageRequest(image=spec(ref)), timeout=30)


def test_image_fs_info(images: api_pb2_grpc.ImageServiceStub, registry: Registry) -> None:
    ref = registry.ref("busybox")
    images.PullImage(cri.PullImageRequest(image=spec(ref)), timeout=120)
    try:
        [usage] = images.ImageFsInfo(cri.ImageFsInfoRequest(), timeout=30).image_filesystems
        assert usage.fs_id.mountpoint.endswith("/snapshots/overlayfs")
        assert usage.used_bytes.value > 0 and usage.inodes_used.value > 0
        assert usage.timestamp > 0
    finally:
        images.RemoveImage(cri.RemoveImageRequest(image=spec(ref)), timeout=30)


def test_bad_input(images: api_pb2_grpc.ImageServiceStub, registry: Registry) -> None:
    assert not status(images, f"{registry.address}/testimages/absent:latest").HasField("image")
    assert not status(images, "sha256:" + "0" * 64).HasField("image")
    for bad, code in (
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("Not A Reference", grpc.StatusCode.INVALID_ARGUMENT),
        (f"{registry.address}/testimages/absent:latest", grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.RpcError) as err:
            images.PullImage(cri.PullImageRequest(image=spec(bad)), timeout=60)
        assert err.value.code() == code, (bad, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        images.ImageStatus(cri.ImageStatusRequest(image=spec("")), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("basic", [False, True], ids=["token", "basic"])
def test_pull_with_credentials(
    images: api_pb2_grpc.ImageServiceStub, registry: Registry, basic: bool
) -> None:
    users = {"carol": ("secret", {"pull"})}
    with TokenFront(registry.address, users, basic=basic) as front:
        ref = f"{front.address}/testimages/busybox:latest"
        with pytest.raises(grpc.RpcError) as err:
            images.PullImage(cri.PullImageRequest(image=spec(ref)), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # kubelet sends username and password, or docker's base64 "auth" of the two.
        for auth in (
            cri.AuthConfig(username="carol", password="secret"),
            cri.AuthConfig(auth=base64.b64encode(b"carol:secret").decode()),
        ):
            pulled = images.PullImage(cri.PullImageRequest(image=spec(ref), auth=auth))
            assert status(images, ref).image.id == pulled.image_ref
            images.RemoveImage(cri.RemoveImageRequest(image=spec(ref)), timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            wrong = cri.AuthConfig(username="carol", password="wrong")
            images.PullImage(cri.PullImageRequest(image=spec(ref), auth=wrong), timeout=60)
        assert err.value.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
