"""The registry client against the real docker-registry, directly and through small real
HTTP fronts (tests/registry_fronts.py): resume, garbage, auth, mirrors, TLS, push."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shared.diff import Descriptor
from shared.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from shared.registry import (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Credentials,
    DockerConfig,
    RegistryClient,
    digest_of,
    parse,
    parse_challenges,
    verify_digest,
)
from shared.registry.auth import merge_scopes
from shared.registry.hosts import host_directory_names
from tests.harness import free_port
from tests.registry_fronts import (
    Canned,
    Forwarder,
    Pki,
    Reply,
    Request,
    TLSForwarder,
    TokenFront,
    make_pki,
    registry_error,
)
from tests.testimages import Images, Registry

REFS = ["busybox", "multilayer", "multilayer-zstd", "multiarch"]


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(backoff=0.01) as c:
        yield c


@pytest.fixture(scope="module")
def empty_registry() -> Iterator[Registry]:
    with Registry(None) as r:
        yield r


def desc_of(d: dict[str, Any]) -> Descriptor:
    return Descriptor(d["mediaType"], d["digest"], d["size"])


def blob_descs(images: Images, name: str, platform: str = "linux/amd64") -> list[Descriptor]:
    manifest = images.manifest(name, platform)
    return [desc_of(manifest["config"]), *(desc_of(layer) for layer in manifest["layers"])]


def fetch(client: RegistryClient, ref: str, desc: Descriptor, offset: int = 0) -> bytes:
    return b"".join(client.fetch_blob(ref, desc, offset))


def write_hosts(root: Path, host: str, text: str) -> Path:
    d = root / host_directory_names(host)[0]
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return d


# -- pull from the real registry ---------------------------------------------------------


@pytest.mark.parametrize("name", REFS)
def test_resolve_and_fetch_each_image(
    client: RegistryClient, registry: Registry, testimages: Images, name: str
) -> None:
    ref = registry.ref(name)
    resolved, desc = client.resolve(ref)
    assert resolved == ref
    assert (desc.digest, desc.media_type, desc.size) == (
        testimages.digest(name), testimages.media_type(name), testimages.size(name)
    )  # fmt: skip
    manifest = client.fetch_manifest(ref, desc)
    assert manifest == testimages.blob(desc.digest)
    for blob in blob_descs(testimages, name):
        assert fetch(client, ref, blob) == testimages.blob(blob.digest)


def test_multi_platform_index(
    client: RegistryClient, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("multiarch")
    _, desc = client.resolve(ref)
    assert desc.media_type == MEDIA_TYPE_OCI_INDEX
    index = json.loads(client.fetch_manifest(ref, desc))
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]
    }
    assert platforms == {"linux/amd64", "linux/arm64"}
    for entry in index["manifests"]:
        child = desc_of(entry)
        manifest = json.loads(client.fetch_manifest(ref, child))
        assert manifest["mediaType"] == MEDIA_TYPE_OCI_MANIFEST
        platform = (
            "linux/amd64" if entry["platform"]["architecture"] == "amd64" else "linux/arm64/v8"
        )
        assert testimages.resolve("multiarch", platform).digest == child.digest
        for layer in manifest["layers"]:
            data = fetch(client, ref, desc_of(layer))
            assert digest_of(data) == layer["digest"]


def test_resolve_by_digest_checks_existence(
    client: RegistryClient, registry: Registry, testimages: Images
) -> None:
    digest = testimages.digest("busybox")
    ref = f"{registry.address}/testimages/busybox@{digest}"
    assert client.resolve(ref) == (
        ref,
        Descriptor(MEDIA_TYPE_OCI_MANIFEST, digest, testimages.size("busybox")),
    )
    with pytest.raises(NotFound, match=r"not found in 127\.0\.0\.1"):
        client.resolve(f"{registry.address}/testimages/busybox@sha256:{'0' * 64}")
    # A tag and a digest: the digest decides.
    tagged = f"{registry.address}/testimages/busybox:nosuchtag@{digest}"
    assert client.resolve(tagged)[1].digest == digest


def test_resumed_fetch_from_an_offset(
    client: RegistryClient, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("busybox")
    layer = blob_descs(testimages, "busybox")[1]
    data = testimages.blob(layer.digest)
    for offset in (1, 1000, layer.size // 2, layer.size - 1):
        assert fetch(client, ref, layer, offset) == data[offset:]
    assert fetch(client, ref, layer, layer.size) == b""
    with pytest.raises(OutOfRange):
        client.fetch_blob(ref, layer, layer.size + 1)
    chunks = list(client.fetch_blob(ref, layer))
    assert b"".join(verify_digest(chunks, layer)) == data
    assert all(len(c) == 1 << 20 for c in chunks[:-1])


def test_not_found(client: RegistryClient, registry: Registry, testimages: Images) -> None:
    with pytest.raises(
        NotFound, match=rf"testimages/busybox:nosuchtag not found in {registry.address}"
    ):
        client.resolve(f"{registry.address}/testimages/busybox:nosuchtag")
    with pytest.raises(NotFound):
        client.resolve(f"{registry.address}/no/such/repo:latest")
    missing = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "1" * 64, 10)
    blobs = client.fetch_blob(registry.ref("busybox"), missing)  # lazy: nothing asked yet
    with pytest.raises(NotFound, match="BLOB_UNKNOWN"):
        next(blobs)
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
        client.fetch_manifest(
            registry.ref("busybox"), Descriptor(MEDIA_TYPE_OCI_MANIFEST, missing.digest, 10)
        )


def test_reference_checks(client: RegistryClient, registry: Registry) -> None:
    with pytest.raises(InvalidArgument, match="no registry host"):
        client.resolve("busybox:latest")
    with pytest.raises(InvalidArgument, match="object required"):
        client.resolve(f"{registry.address}/testimages/busybox")
    with pytest.raises(InvalidArgument, match="not a manifest or index"):
        client.fetch_manifest(
            registry.ref("busybox"), Descriptor("text/plain", "sha256:" + "2" * 64, 3)
        )
    with pytest.raises(InvalidArgument, match="larger than 4194304"):
        client.fetch_manifest(
            registry.ref("busybox"),
            Descriptor(MEDIA_TYPE_OCI_MANIFEST, "sha256:" + "2" * 64, 5 << 20),
        )


def test_parallel_downloads_share_one_client(
    client: RegistryClient, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("multilayer")
    descs = blob_descs(testimages, "multilayer") * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda d: fetch(client, ref, d), descs))
    assert [digest_of(r) for r in results] == [d.digest for d in descs]


# -- a registry that drops the connection ------------------------------------------------


def test_dropped_connection_is_resumed_with_range(registry: Registry, testimages: Images) -> None:
    layer = blob_descs(testimages, "busybox")[1]
    with (
        Forwarder(registry.address, cut_blobs=1, cut_after=300_000) as front,
        RegistryClient(backoff=0.01) as client,
    ):
        ref = f"{front.address}/testimages/busybox:latest"
        data = b"".join(verify_digest(client.fetch_blob(ref, layer), layer))
        assert digest_of(data) == layer.digest
        gets = front.requests("GET", layer.digest)
        assert [g.headers.get("Range") for g in gets] == [None, "bytes=300000-"]


def test_every_response_cut_still_finishes(registry: Registry, testimages: Images) -> None:
    layer = blob_descs(testimages, "busybox")[1]
    with (
        Forwarder(registry.address, cut_blobs=-1, cut_after=200_000) as front,
        RegistryClient(backoff=0.01) as client,
    ):
        ref = f"{front.address}/testimages/busybox:latest"
        assert fetch(client, ref, layer, offset=100) == testimages.blob(layer.digest)[100:]
        ranges = [g.headers.get("Range") for g in front.requests("GET", layer.digest)]
        assert ranges == [
            "bytes=100-",
            "bytes=200100-",
            "bytes=400100-",
            "bytes=600100-",
            "bytes=800100-",
            "bytes=1000100-",
        ]


def test_a_registry_that_ignores_range(testimages: Images) -> None:
    layer = blob_descs(testimages, "busybox")[1]
    data = testimages.blob(layer.digest)
    with Canned() as canned, RegistryClient(plain_http=True, backoff=0.01) as client:
        canned.routes[("GET", f"/v2/x/blobs/{layer.digest}")] = Reply(200, data)
        assert fetch(client, f"{canned.address}/x:latest", layer, offset=500_000) == data[500_000:]


def test_blob_redirects_to_storage_without_the_credentials(testimages: Images) -> None:
    layer = blob_descs(testimages, "busybox")[1]
    data = testimages.blob(layer.digest)
    with Canned() as registry, Canned() as storage:

        def blob(request: Request) -> Reply:
            start = int(request.headers.get("Range", "bytes=0-")[6:-1])
            headers = (
                {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
            )
            return Reply(206 if start else 200, data[start:], headers)

        def redirect(request: Request) -> Reply:
            if request.headers.get("Authorization") != "Basic " + b64("u", "p"):
                return Reply(401, b"", {"WWW-Authenticate": 'Basic realm="r"'})
            return Reply(307, b"", {"Location": f"{storage.url}/store/{layer.digest}?sig=1"})

        registry.routes[("GET", f"/v2/x/blobs/{layer.digest}")] = redirect
        storage.routes[("GET", f"/store/{layer.digest}")] = blob
        with RegistryClient(
            plain_http=True, credentials=lambda host: Credentials("u", "p")
        ) as client:
            assert fetch(client, f"{registry.address}/x:1", layer) == data
            assert fetch(client, f"{registry.address}/x:1", layer, offset=7) == data[7:]
        assert [(r.headers.get("Authorization"), r.headers.get("Range")) for r in storage.log] == [
            (None, None),
            (None, "bytes=7-"),
        ]


def test_localhost_tries_https_then_uses_http(registry: Registry, testimages: Images) -> None:
    with Forwarder(registry.address) as front, RegistryClient() as client:
        (host,) = client.hosts(front.address)
        assert (host.scheme, host.http_fallback, host.skip_verify) == ("https", True, True)
        for _ in range(2):
            assert client.resolve(f"{front.address}/testimages/busybox:latest")[
                1
            ].digest == testimages.digest("busybox")
        assert [r.method for r in front.log] == ["HEAD", "HEAD"]  # the TLS hello was no request


# -- garbage -----------------------------------------------------------------------------

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "3" * 64, "size": 2},
                       "layers": []}).encode()  # fmt: skip
OCI = {"Content-Type": MEDIA_TYPE_OCI_MANIFEST}


@pytest.fixture
def canned() -> Iterator[tuple[Canned, RegistryClient]]:
    with Canned() as server, RegistryClient(plain_http=True, backoff=0.01) as c:
        yield server, c


def test_garbage_manifest_is_invalid(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    garbage = b"<html>this is not json</html>"
    server.routes[("HEAD", "/v2/g/manifests/latest")] = Reply(
        200, b"", {**OCI, "Content-Length": str(len(garbage))}
    )
    server.routes[("GET", "/v2/g/manifests/latest")] = Reply(200, garbage, OCI)
    server.routes[("GET", f"/v2/g/manifests/{digest_of(garbage)}")] = Reply(200, garbage, OCI)
    # HEAD without Docker-Content-Digest: containerd GETs the manifest and hashes it.
    _, desc = client.resolve(f"{server.address}/g:latest")
    assert desc == Descriptor(MEDIA_TYPE_OCI_MANIFEST, digest_of(garbage), len(garbage))
    assert [r.method for r in server.log] == ["HEAD", "GET"]
    with pytest.raises(InvalidArgument, match="is not JSON"):
        client.fetch_manifest(f"{server.address}/g:latest", desc)


def test_manifest_of_another_digest_is_data_loss(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    desc = Descriptor(MEDIA_TYPE_OCI_MANIFEST, digest_of(MANIFEST), len(MANIFEST))
    other = MANIFEST.replace(b'"layers": []', b'"layers":  []')
    server.routes[("GET", f"/v2/g/manifests/{desc.digest}")] = Reply(200, other, OCI)
    with pytest.raises(DataLoss, match="of digest"):
        client.fetch_manifest(f"{server.address}/g:latest", desc)
    index_desc = Descriptor(MEDIA_TYPE_OCI_INDEX, desc.digest, desc.size)
    server.routes[("GET", f"/v2/g/manifests/{desc.digest}")] = Reply(200, MANIFEST, OCI)
    with pytest.raises(InvalidArgument, match="says mediaType"):
        client.fetch_manifest(f"{server.address}/g:latest", index_desc)


def test_garbage_headers_and_sizes(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    server.routes[("HEAD", "/v2/g/manifests/bad")] = Reply(
        200, b"", {**OCI, "Content-Length": "10", "Docker-Content-Digest": "sha256:xyz"}
    )
    with pytest.raises(InvalidArgument, match="bad Docker-Content-Digest"):
        client.resolve(f"{server.address}/g:bad")
    big = {**OCI, "Content-Length": str(5 << 20), "Docker-Content-Digest": "sha256:" + "4" * 64}
    server.routes[("HEAD", "/v2/g/manifests/big")] = Reply(200, b"", big)
    with pytest.raises(InvalidArgument, match="larger than 4194304"):
        client.resolve(f"{server.address}/g:big")
    server.routes[("GET", "/v2/g/manifests/huge")] = Reply(200, b"{" + b" " * (5 << 20) + b"}", OCI)
    server.routes[("HEAD", "/v2/g/manifests/huge")] = Reply(200, b"", OCI)  # no length, no digest
    with pytest.raises(InvalidArgument, match="larger than 4194304"):
        client.resolve(f"{server.address}/g:huge")
    blob = b"0123456789"
    desc = Descriptor("application/octet-stream", digest_of(blob[:5]), 5)
    server.routes[("GET", f"/v2/g/blobs/{desc.digest}")] = Reply(200, blob)
    with pytest.raises(DataLoss, match="more than 5 bytes"):
        fetch(client, f"{server.address}/g:x", desc)


def test_error_statuses(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    ref = f"{server.address}/g:latest"
    server.routes[("HEAD", "/v2/g/manifests/latest")] = Reply(400, b"")
    with pytest.raises(InvalidArgument, match=r"rejected manifest .*/g:latest: HTTP 400"):
        client.resolve(ref)
    desc = Descriptor(MEDIA_TYPE_OCI_MANIFEST, digest_of(MANIFEST), len(MANIFEST))
    server.routes[("GET", f"/v2/g/manifests/{desc.digest}")] = Reply(
        400, b"<html>Bad things</html>"
    )
    with pytest.raises(
        InvalidArgument, match=r"HTTP 400 \(registry said: <html>Bad things</html>\)"
    ):
        client.fetch_manifest(ref, desc)
    server.routes[("HEAD", "/v2/g/manifests/latest")] = Reply(403, b"")
    with pytest.raises(PermissionDenied, match=f"{server.address} denied access"):
        client.resolve(ref)
    server.routes[("PUT", "/v2/g/manifests/latest")] = registry_error(
        422, "MANIFEST_INVALID", "manifest invalid"
    )
    with pytest.raises(InvalidArgument, match="MANIFEST_INVALID: manifest invalid"):
        client.push_manifest(ref, MEDIA_TYPE_OCI_MANIFEST, MANIFEST)
    server.log.clear()
    server.routes[("HEAD", "/v2/g/manifests/latest")] = Reply(503, b"busy")
    with pytest.raises(Unavailable, match="HTTP 503"):
        client.resolve(ref)
    assert len(server.log) == 4  # retried with backoff


def test_head_not_allowed_and_bad_ranges(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    server.routes[("HEAD", "/v2/g/manifests/latest")] = Reply(405, b"")
    server.routes[("GET", "/v2/g/manifests/latest")] = Reply(200, MANIFEST, OCI)
    assert client.resolve(f"{server.address}/g:latest")[1] == Descriptor(
        MEDIA_TYPE_OCI_MANIFEST, digest_of(MANIFEST), len(MANIFEST)
    )
    blob = b"0123456789"
    desc = Descriptor("application/octet-stream", digest_of(blob), len(blob))
    server.routes[("GET", f"/v2/g/blobs/{desc.digest}")] = Reply(
        206, blob[2:], {"Content-Range": "bytes 2-9/10"}
    )
    with pytest.raises(InvalidArgument, match="Content-Range 'bytes 2-9/10'"):
        fetch(client, f"{server.address}/g:x", desc, offset=5)


def test_retries_then_success(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    answers = iter([Reply(503, b""), Reply(429, b"", {"Retry-After": "0"}), Reply(502, b"")])

    def flaky(request: Request) -> Reply:
        return next(
            answers,
            Reply(
                200,
                b"",
                {
                    **OCI,
                    "Content-Length": str(len(MANIFEST)),
                    "Docker-Content-Digest": digest_of(MANIFEST),
                },
            ),
        )

    server.routes[("HEAD", "/v2/g/manifests/latest")] = flaky
    assert client.resolve(f"{server.address}/g:latest")[1].digest == digest_of(MANIFEST)
    assert len(server.log) == 4


def test_connection_refused_is_unavailable() -> None:
    port = free_port()
    with RegistryClient(plain_http=True, backoff=0.01) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=f"127.0.0.1:{port}: HEAD manifest .* failed"):
            client.resolve(f"127.0.0.1:{port}/x:latest")
        assert time.monotonic() - started < 5


# -- authentication ----------------------------------------------------------------------

ALICE = {"alice": ("secret", {"pull", "push"}), "reader": ("r3ad", {"pull"})}


def docker_config(tmp_path: Path, auths: dict[str, Any], **extra: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths, **extra}))
    return path


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_token_auth(registry: Registry, testimages: Images, tmp_path: Path) -> None:
    with TokenFront(registry.address, ALICE) as front:
        config = docker_config(tmp_path, {front.address: {"auth": b64("alice", "secret")}})
        ref = f"{front.address}/testimages/multilayer:latest"
        with RegistryClient(docker_config=config, backoff=0.01) as client:
            _, desc = client.resolve(ref)
            assert desc.digest == testimages.digest("multilayer")
            client.fetch_manifest(ref, desc)
            with ThreadPoolExecutor(4) as pool:
                datas = list(
                    pool.map(lambda d: fetch(client, ref, d), blob_descs(testimages, "multilayer"))
                )
            assert [digest_of(d) for d in datas] == [
                d.digest for d in blob_descs(testimages, "multilayer")
            ]
        tokens = front.token_requests()
        assert len(tokens) == 1  # cached for every later request, threads included
        with RegistryClient() as anonymous:
            with pytest.raises(Unauthenticated):
                anonymous.resolve(ref)
            alice = anonymous.with_credentials(lambda host: Credentials("alice", "secret"))
            assert alice.resolve(ref)[1].digest == testimages.digest("multilayer")
        assert tokens[0].query == {
            "service": ["berth-test"],
            "scope": ["repository:testimages/multilayer:pull"],
        }
        assert tokens[0].headers["Authorization"] == "Basic " + b64("alice", "secret")


def test_no_or_wrong_credentials(registry: Registry, tmp_path: Path) -> None:
    with TokenFront(registry.address, ALICE) as front:
        ref = f"{front.address}/testimages/busybox:latest"
        with (
            RegistryClient(backoff=0.01) as client,
            pytest.raises(
                Unauthenticated,
                match=rf"{front.address} requires authentication \(or the repository does not exist\) and berth has no credentials",
            ),
        ):
            client.resolve(ref)
        config = docker_config(
            tmp_path, {f"https://{front.address}/v1/": {"username": "alice", "password": "nope"}}
        )
        with (
            RegistryClient(docker_config=config) as client,
            pytest.raises(Unauthenticated, match="refused the credentials"),
        ):
            client.resolve(ref)
        config = docker_config(tmp_path, {"other.example": {"auth": b64("alice", "secret")}})
        with (
            RegistryClient(docker_config=config) as client,
            pytest.raises(Unauthenticated, match=f"no credentials for it in {config}"),
        ):
            client.resolve(ref)


def test_identity_token_access_token_and_expiry(registry: Registry, tmp_path: Path) -> None:
    with TokenFront(
        registry.address,
        ALICE,
        identity_tokens={"refresh-1": "alice"},
        expires_in=1,
        token_key="access_token",
    ) as front:
        config = docker_config(tmp_path, {front.address: {"identitytoken": "refresh-1"}})
        ref = f"{front.address}/testimages/busybox:latest"
        with RegistryClient(docker_config=config) as client:
            client.resolve(ref)
            client.resolve(ref)
            assert len(front.token_requests()) == 1
            time.sleep(1.1)  # expires_in: 1
            client.resolve(ref)
        tokens = front.token_requests()
        assert [t.method for t in tokens] == ["POST", "POST"]
        form = tokens[0].body.decode()
        assert "grant_type=refresh_token" in form and "refresh_token=refresh-1" in form


def test_basic_auth(registry: Registry, tmp_path: Path) -> None:
    with TokenFront(registry.address, ALICE, basic=True) as front:
        ref = f"{front.address}/testimages/busybox:latest"
        config = docker_config(tmp_path, {front.address: {"auth": b64("reader", "r3ad")}})
        with RegistryClient(docker_config=config) as client:
            client.resolve(ref)
            client.resolve(ref)
        assert [r.headers.get("Authorization") is None for r in front.log] == [True, False, False]
        with RegistryClient() as client, pytest.raises(Unauthenticated, match="no credentials"):
            client.resolve(ref)
        assert front.token_requests() == []


def test_push_scope_and_permission_denied(
    empty_registry: Registry, testimages: Images, tmp_path: Path
) -> None:
    config_blob = blob_descs(testimages, "busybox")[0]
    data = testimages.blob(config_blob.digest)
    with TokenFront(empty_registry.address, ALICE) as front:
        ref = f"{front.address}/auth/busybox:latest"
        config = docker_config(tmp_path, {front.address: {"auth": b64("reader", "r3ad")}})
        with (
            RegistryClient(docker_config=config) as client,
            pytest.raises(PermissionDenied, match="DENIED"),
        ):
            client.push_blob(ref, config_blob, [data])
        config = docker_config(tmp_path, {front.address: {"auth": b64("alice", "secret")}})
        with RegistryClient(docker_config=config) as client:
            assert client.push_blob(ref, config_blob, [data]) == "uploaded"
        assert "repository:auth/busybox:pull,push" in front.token_requests()[-1].query["scope"]


def test_credential_helpers(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-berthtest"
    helper.write_text('#!/bin/sh\nread server\necho "$server" >> "$(dirname "$0")/asked"\n'
                      'echo \'{"ServerURL": "x", "Username": "alice", "Secret": "secret"}\'\n')  # fmt: skip
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with TokenFront(registry.address, ALICE) as front:
        ref = f"{front.address}/testimages/busybox:latest"
        config = docker_config(tmp_path, {}, credHelpers={front.address: "berthtest"})
        with RegistryClient(docker_config=config) as client:
            for _ in range(3):
                client.resolve(ref)
        asked = (bindir / "asked").read_text().split()
        assert set(asked) == {front.address} and len(asked) <= 2  # not once per request
        # A missing helper is skipped; the auths entry still works.
        config = docker_config(
            tmp_path, {front.address: {"auth": b64("alice", "secret")}}, credsStore="nosuchhelper"
        )
        with RegistryClient(docker_config=config) as client:
            client.resolve(ref)


def test_docker_config_lookup(tmp_path: Path) -> None:
    config = DockerConfig(docker_config(tmp_path, {
        "https://index.docker.io/v1/": {"auth": b64("hub", "pw:with:colons")},
        "http://reg.example:5000/v2/": {"username": "u", "password": "p"},
        "tok.example": {"registrytoken": "bearer-x"},
        "empty.example": {},
    }))  # fmt: skip
    assert config("registry-1.docker.io") == Credentials("hub", "pw:with:colons")
    assert config("docker.io") == Credentials("hub", "pw:with:colons")
    assert config("reg.example:5000") == Credentials("u", "p")
    assert config("tok.example") == Credentials(registry_token="bearer-x")
    assert config("empty.example") is None
    assert config("reg.example") is None
    assert "secret" not in repr(Credentials("u", "secret"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArgument, match=r"bad\.json"):
        DockerConfig(bad)("x")
    bad.write_text(json.dumps({"auths": {"x": {"auth": "!!!"}}}))
    with pytest.raises(InvalidArgument, match="not base64"):
        DockerConfig(bad)("x")
    assert DockerConfig(tmp_path / "missing.json")("x") is None


def test_challenge_parsing() -> None:
    header = ('Bearer realm="https://auth.example/token",service="reg.example",'
              'scope="repository:a/b:pull,push",error="insufficient_scope", Basic realm="x y"')  # fmt: skip
    bearer, basic = parse_challenges([header])
    assert bearer.scheme == "bearer" and basic.scheme == "basic"
    assert bearer.params == {"realm": "https://auth.example/token", "service": "reg.example",
                             "scope": "repository:a/b:pull,push", "error": "insufficient_scope"}  # fmt: skip
    assert basic.params == {"realm": "x y"}
    assert parse_challenges(['Basic realm="a\\"b"', "Negotiate"]) == [
        parse_challenges(['basic realm="a\\"b"'])[0], parse_challenges(["negotiate"])[0]]  # fmt: skip
    assert parse_challenges(['Basic realm="a\\"b"'])[0].params["realm"] == 'a"b'
    assert merge_scopes(["repository:a:pull", "repository:a:push repository:b:pull", ""]) == (
        "repository:a:pull,push", "repository:b:pull")  # fmt: skip


def test_garbage_token_server(canned: tuple[Canned, RegistryClient]) -> None:
    server, client = canned
    challenge = {"WWW-Authenticate": f'Bearer realm="{server.url}/token",service="s"'}
    server.routes[("HEAD", "/v2/g/manifests/latest")] = Reply(401, b"", challenge)
    server.routes[("GET", "/token")] = Reply(200, b"<html>login</html>")
    with pytest.raises(InvalidArgument, match=r"token server .* answered garbage"):
        client.resolve(f"{server.address}/g:latest")
    server.routes[("GET", "/token")] = Reply(200, b'{"expires_in": 10}')
    with pytest.raises(InvalidArgument, match="without a token"):
        client.resolve(f"{server.address}/g:latest")


# -- hosts.toml: mirrors -----------------------------------------------------------------


def test_mirror_gets_the_namespace_and_the_server_is_the_fallback(
    registry: Registry, testimages: Images, tmp_path: Path
) -> None:
    ref = "docker.io/testimages/busybox:latest"
    layer = blob_descs(testimages, "busybox")[1]
    with Forwarder(registry.address) as mirror:
        write_hosts(tmp_path, "docker.io", f'server = "http://{registry.address}"\n'
                    f'[host."http://{mirror.address}"]\ncapabilities = ["pull", "resolve"]\n')  # fmt: skip
        with RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client:
            _, desc = client.resolve(ref)
            assert desc.digest == testimages.digest("busybox")
            assert digest_of(fetch(client, ref, layer)) == layer.digest
        assert [(r.method, r.path) for r in mirror.log] == [
            ("HEAD", "/v2/testimages/busybox/manifests/latest?ns=docker.io"),
            ("GET", f"/v2/testimages/busybox/blobs/{layer.digest}?ns=docker.io"),
        ]
    # The mirror is gone: the server answers, at once (a failing mirror is not retried).
    with RegistryClient(hosts_dir=tmp_path, backoff=5) as client:
        started = time.monotonic()
        assert client.resolve(ref)[1].digest == testimages.digest("busybox")
        assert digest_of(fetch(client, ref, layer)) == layer.digest
        assert time.monotonic() - started < 3


def test_failing_mirrors_fall_back_in_order(
    registry: Registry, testimages: Images, tmp_path: Path
) -> None:
    with Canned() as broken, Canned() as empty, Forwarder(registry.address) as server:
        broken.routes[("HEAD", "/v2/testimages/busybox/manifests/latest")] = Reply(500, b"oops")
        write_hosts(tmp_path, "mirror.test", f'server = "http://{server.address}"\n'
                    f'[host."http://{broken.address}"]\n[host."http://{empty.address}"]\n')  # fmt: skip
        with RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client:
            _, desc = client.resolve("mirror.test/testimages/busybox:latest")
        assert desc.digest == testimages.digest("busybox")
        assert len(broken.log) == len(empty.log) == len(server.log) == 1
        assert all(f.log[0].query == {"ns": ["mirror.test"]} for f in (broken, empty, server))
        # Every endpoint failing: the first error that was not a 404 is raised.
        server.upstream = f"127.0.0.1:{free_port()}"
        broken.routes[("HEAD", "/v2/testimages/busybox/manifests/nosuch")] = Reply(500, b"oops")
        with (
            RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client,
            pytest.raises(Unavailable, match=f"{broken.address} is unavailable"),
        ):
            client.resolve("mirror.test/testimages/busybox:nosuch")


def test_resolve_and_push_capabilities(registry: Registry, tmp_path: Path) -> None:
    with Forwarder(registry.address) as pull_only:
        write_hosts(tmp_path, "cap.test", f'server = "http://{registry.address}"\ncapabilities = ["pull"]\n'
                    f'[host."http://{pull_only.address}"]\ncapabilities = ["pull"]\n')  # fmt: skip
        with RegistryClient(hosts_dir=tmp_path) as client:
            with pytest.raises(FailedPrecondition, match="resolve capability"):
                client.resolve("cap.test/testimages/busybox:latest")
            with pytest.raises(FailedPrecondition, match="push capability"):
                client.push_manifest("cap.test/x:1", MEDIA_TYPE_OCI_MANIFEST, MANIFEST)
        assert pull_only.log == []


def test_hosts_headers_are_sent(registry: Registry, tmp_path: Path) -> None:
    with Forwarder(registry.address) as front:
        write_hosts(tmp_path, front.address, f'server = "http://{front.address}"\n'
                    '[header]\nx-berth = ["a", "b"]\nx-one = "1"\n')  # fmt: skip
        with RegistryClient(hosts_dir=tmp_path) as client:
            client.resolve(f"{front.address}/testimages/busybox:latest")
        headers = front.log[0].headers
        assert headers["x-berth"] == "a, b" or headers["x-berth"] in ("a", "b")
        assert headers["x-one"] == "1" and headers["User-Agent"] == "berth/0.1"


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_ca_skip_verify_and_client_certs(registry: Registry, pki: Pki, tmp_path: Path) -> None:
    with TLSForwarder(registry.address, pki.server_cert, pki.server_key) as front:
        ref = "tls.test/testimages/busybox:latest"
        d = write_hosts(
            tmp_path, "tls.test", f'server = "https://{front.address}"\nca = "ca.crt"\n'
        )
        shutil.copy(pki.ca, d / "ca.crt")
        with RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client:
            assert client.resolve(ref)
        write_hosts(tmp_path, "tls.test", f'server = "https://{front.address}"\n')
        with (
            RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client,
            pytest.raises(Unavailable, match="failed TLS verification"),
        ):
            client.resolve(ref)
        write_hosts(
            tmp_path, "tls.test", f'server = "https://{front.address}"\nskip_verify = true\n'
        )
        with RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client:
            assert client.resolve(ref)
        # No configuration at all for a loopback address: https, unverified, no fallback needed.
        with RegistryClient(backoff=0.01) as client:
            assert client.resolve(f"{front.address}/testimages/busybox:latest")
    with TLSForwarder(registry.address, pki.server_cert, pki.server_key, client_ca=pki.ca) as front:
        write_hosts(tmp_path, "tls.test", f'server = "https://{front.address}"\nca = "{pki.ca}"\n'
                    f'client = [["{pki.client_cert}", "{pki.client_key}"]]\n')  # fmt: skip
        with RegistryClient(hosts_dir=tmp_path, backoff=0.01) as client:
            assert client.resolve(ref)
        write_hosts(tmp_path, "tls.test", f'server = "https://{front.address}"\nca = "{pki.ca}"\n')
        with (
            RegistryClient(hosts_dir=tmp_path, backoff=0.01, max_attempts=2) as client,
            pytest.raises(Unavailable),
        ):
            client.resolve(ref)


def test_missing_tls_files_are_invalid(tmp_path: Path) -> None:
    write_hosts(tmp_path, "tls.test", 'server = "https://127.0.0.1:1"\nca = "nope.crt"\n')
    with (
        RegistryClient(hosts_dir=tmp_path) as client,
        pytest.raises(InvalidArgument, match=r"TLS files for 127\.0\.0\.1:1"),
    ):
        client.resolve("tls.test/x:latest")


# -- push --------------------------------------------------------------------------------


def push_image(client: RegistryClient, images: Images, name: str, target: str) -> str:
    """Push ``name`` (its blobs, child manifests, then itself) as ``target``; its digest."""
    top = images.descriptor(name)
    r = parse(target)
    if top.media_type == MEDIA_TYPE_OCI_INDEX:
        for entry in images.json_blob(top.digest)["manifests"]:
            push_manifest_tree(client, images, r.name, desc_of(entry))
    else:
        push_blobs(client, images, r.name, top.digest)
    return client.push_manifest(target, top.media_type, images.blob(top.digest))


def push_manifest_tree(client: RegistryClient, images: Images, name: str, desc: Descriptor) -> None:
    push_blobs(client, images, name, desc.digest)
    assert (
        client.push_manifest(f"{name}@{desc.digest}", desc.media_type, images.blob(desc.digest))
        == desc.digest
    )


def push_blobs(client: RegistryClient, images: Images, name: str, manifest_digest: str) -> None:
    manifest = images.json_blob(manifest_digest)
    for d in [manifest["config"], *manifest["layers"]]:
        data = images.blob(d["digest"])
        chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
        assert client.push_blob(f"{name}:x", desc_of(d), chunks) in ("uploaded", "exists")


def pull_back(client: RegistryClient, images: Images, name: str, ref: str) -> None:
    _, desc = client.resolve(ref)
    assert desc.digest == images.digest(name)
    manifests = [desc]
    if desc.media_type == MEDIA_TYPE_OCI_INDEX:
        manifests = [desc_of(m) for m in json.loads(client.fetch_manifest(ref, desc))["manifests"]]
    for m in manifests:
        manifest = json.loads(client.fetch_manifest(ref, m))
        for d in [manifest["config"], *manifest["layers"]]:
            assert fetch(client, ref, desc_of(d)) == images.blob(d["digest"])


def test_push_monolithic_and_pull_back(empty_registry: Registry, testimages: Images) -> None:
    with Forwarder(empty_registry.address) as front, RegistryClient(backoff=0.01) as client:
        for name in ("busybox", "multiarch"):
            target = f"{front.address}/mono/{name}:v1"
            assert push_image(client, testimages, name, target) == testimages.digest(name)
            pull_back(client, testimages, name, target)
        assert front.requests("PATCH") == []
        puts = [r for r in front.requests("PUT") if "/blobs/uploads/" in r.path]
        assert puts and all(r.query["digest"] and r.body for r in puts)
        # Pushing again finds everything there.
        layer = blob_descs(testimages, "busybox")[1]
        assert client.push_blob(f"{front.address}/mono/busybox:v1", layer, [b"unused"]) == "exists"


def test_push_chunked_and_pull_back(empty_registry: Registry, testimages: Images) -> None:
    chunk = 100_000
    with (
        Forwarder(empty_registry.address) as front,
        RegistryClient(backoff=0.01, upload_chunk_size=chunk) as client,
    ):
        target = f"{front.address}/chunked/busybox:v1"
        assert push_image(client, testimages, "busybox", target) == testimages.digest("busybox")
        pull_back(client, testimages, "busybox", target)
        layer = blob_descs(testimages, "busybox")[1]
        patches = front.requests("PATCH")
        assert len(patches) == -(-layer.size // chunk)
        ranges = [p.headers["Content-Range"] for p in patches]
        assert (
            ranges[0] == f"0-{chunk - 1}"
            and ranges[-1] == f"{(len(ranges) - 1) * chunk}-{layer.size - 1}"
        )
        final = [
            r
            for r in front.requests("PUT")
            if "/blobs/uploads/" in r.path and r.query.get("digest") == [layer.digest]
        ]
        assert len(final) == 1 and final[0].body == b""


def test_cross_repository_mount(empty_registry: Registry, testimages: Images) -> None:
    layer = blob_descs(testimages, "busybox")[1]
    data = testimages.blob(layer.digest)
    with Forwarder(empty_registry.address) as front, RegistryClient(backoff=0.01) as client:
        src, dst = f"{front.address}/mount/src:x", f"{front.address}/mount/dst:x"
        assert client.push_blob(src, layer, [data]) == "uploaded"
        assert not client.blob_exists(dst, layer)
        front.log.clear()
        assert client.push_blob(dst, layer, [b"never read"], mount_from="mount/src") == "mounted"
        assert client.blob_exists(dst, layer)
        (post,) = front.requests("POST")
        assert post.query == {"mount": [layer.digest], "from": ["mount/src"]}
        assert front.requests("PUT") == front.requests("PATCH") == []
        # Mounting from a repository without the blob: the registry starts an upload instead.
        assert (
            client.push_blob(
                f"{front.address}/mount/dst2:x",
                layer,
                [data],
                mount_from=f"{front.address}/mount/nothing",
            )
            == "uploaded"
        )
        assert fetch(client, f"{front.address}/mount/dst2:x", layer) == data


def test_push_errors(empty_registry: Registry, testimages: Images) -> None:
    layer = blob_descs(testimages, "busybox")[1]
    data = testimages.blob(layer.digest)
    ref = f"{empty_registry.address}/errors/busybox:v1"
    for chunk_size in (1 << 24, 100_000):
        with RegistryClient(backoff=0.01, upload_chunk_size=chunk_size) as client:
            with pytest.raises(InvalidArgument, match=r"got .* bytes with digest"):
                client.push_blob(ref, layer, [data[:-1] + b"!"])
            with pytest.raises(InvalidArgument, match="more than the"):
                client.push_blob(ref, layer, [data, b"x"])
            assert not client.blob_exists(ref, layer)
    with RegistryClient() as client:
        manifest = testimages.blob(testimages.digest("busybox"))
        with pytest.raises(InvalidArgument, match="MANIFEST_BLOB_UNKNOWN"):
            client.push_manifest(ref, MEDIA_TYPE_OCI_MANIFEST, manifest)
        with pytest.raises(InvalidArgument, match="the manifest's digest is"):
            client.push_manifest(
                f"{empty_registry.address}/errors/busybox@sha256:{'5' * 64}",
                MEDIA_TYPE_OCI_MANIFEST,
                manifest,
            )
        with pytest.raises(InvalidArgument, match="not a manifest or index"):
            client.push_manifest(ref, "application/json", manifest)


def test_push_and_pull_in_threads(empty_registry: Registry, testimages: Images) -> None:
    """One client, pushes of every blob of two images in parallel, then parallel pulls."""
    with RegistryClient(backoff=0.01, upload_chunk_size=300_000) as client:
        jobs = [
            (name, d)
            for name in ("multilayer", "multilayer-zstd")
            for d in blob_descs(testimages, name)
        ]
        target = f"{empty_registry.address}/threads/all:x"
        with ThreadPoolExecutor(6) as pool:
            results = list(
                pool.map(
                    lambda j: client.push_blob(target, j[1], [testimages.blob(j[1].digest)]), jobs
                )
            )
        assert set(results) <= {"uploaded", "exists"}  # blobs the two images share may race
        with ThreadPoolExecutor(6) as pool:
            datas = list(pool.map(lambda j: fetch(client, target, j[1]), jobs))
        assert [hashlib.sha256(d).hexdigest() for d in datas] == [
            j[1].digest.split(":")[1] for j in jobs
        ]
