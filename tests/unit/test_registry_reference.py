"""Image references: containerd's strict parse and docker's normalize."""

from __future__ import annotations

import pytest

from shared.errors import InvalidArgument
from shared.registry import Reference, normalize, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000/testimages/busybox:latest",
         Reference("127.0.0.1:5000", "testimages/busybox", "latest")),
        (f"docker.io/library/alpine@{DIGEST}", Reference("docker.io", "library/alpine", "", DIGEST)),
        (f"ghcr.io/a/b/c:v1.2-rc_3@{DIGEST}", Reference("ghcr.io", "a/b/c", "v1.2-rc_3", DIGEST)),
        ("localhost/foo", Reference("localhost", "foo")),
        ("[::1]:5000/foo:bar", Reference("[::1]:5000", "foo", "bar")),
        ("Registry.Example.com/a__b/c-d.e_f--g:V1", Reference("Registry.Example.com", "a__b/c-d.e_f--g", "V1")),
        # As ctr: the first component is the host even without a dot.
        ("library/alpine:3", Reference("library", "alpine", "3")),
        ("docker.io/alpine:3", Reference("docker.io", "alpine", "3")),
    ],
)  # fmt: skip
def test_parse_valid(ref: str, expected: Reference) -> None:
    assert parse(ref) == expected
    assert str(parse(ref)) == ref


def test_reference_parts() -> None:
    r = parse(f"127.0.0.1:5000/testimages/busybox:latest@{DIGEST}")
    assert r.name == "127.0.0.1:5000/testimages/busybox"
    assert r.object == DIGEST  # the digest wins: it is what the registry is asked for
    assert parse("h.io/a:t").object == "t"
    assert parse("h.io/a").object == ""


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty"),
        (" docker.io/library/alpine", "whitespace"),
        ("docker.io/library/alp ine", "whitespace"),
        ("alpine", "no registry host"),
        ("alpine:latest", "no registry host"),
        ("https://docker.io/library/alpine", "URL scheme"),
        ("docker.io/Library/alpine", "must be lowercase"),
        ("docker.io/library/alpine:", "tag ''"),
        ("docker.io/library/alpine:-bad", "tag '-bad'"),
        ("docker.io/library/alpine:" + "t" * 129, "tag"),
        ("docker.io/library/alpine@sha256:abc", "invalid digest"),
        ("docker.io/library/alpine@", "empty digest"),
        ("docker.io/library/alpine@md5:" + "a" * 32, "invalid digest"),
        ("-bad.host/x", "not a valid registry host"),
        ("host_name/x", "not a valid registry host"),
        ("docker.io//alpine", "repository '/alpine'"),
        ("docker.io/alpine/", "repository 'alpine/'"),
        ("docker.io/a..b", "repository"),
        ("docker.io/-a", "repository"),
        ("h.io/" + "a" * 251, "longer than 255"),
    ],
)
def test_parse_invalid(ref: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference") as e:
        parse(ref)
    assert message in str(e.value)


def test_parse_max_length_accepted() -> None:
    name = "h.io/" + "a" * 250
    assert len(name) == 255
    assert parse(name + ":t").repository == "a" * 250


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpine", "docker.io/library/alpine:latest"),
        ("alpine:3.19", "docker.io/library/alpine:3.19"),
        ("library/alpine", "docker.io/library/alpine:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("user/app/sub:v1", "docker.io/user/app/sub:v1"),
        ("docker.io/alpine", "docker.io/library/alpine:latest"),
        ("docker.io/library/alpine:edge", "docker.io/library/alpine:edge"),
        ("index.docker.io/alpine", "docker.io/library/alpine:latest"),
        ("index.docker.io/user/app:1", "docker.io/user/app:1"),
        ("localhost/foo", "localhost/foo:latest"),
        ("localhost:5000/foo:bar", "localhost:5000/foo:bar"),
        ("127.0.0.1:5000/testimages/busybox", "127.0.0.1:5000/testimages/busybox:latest"),
        ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
        ("myregistry:5000/x", "myregistry:5000/x:latest"),
        # A digest alone stays alone (docker's TagNameOnly adds latest only to bare names).
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}"),
        (f"alpine:3@{DIGEST}", f"docker.io/library/alpine:3@{DIGEST}"),
        # docker: an upper-case first component is taken as a host.
        ("Foo/bar", "Foo/bar:latest"),
    ],
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize(name) == expected
    assert str(parse(normalize(name))) == expected
    assert normalize(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 64, "image ID"),
        ("Alpine", "must be lowercase"),
        ("library/Alpine:3", "must be lowercase"),
        ("alpine:bad tag", "whitespace"),
        ("alpine:", "tag ''"),
        ("", "empty"),
        ("docker.io/library/alpine@sha256:12", "invalid digest"),
    ],
)
def test_normalize_invalid(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        normalize(name)
    assert message in str(e.value)
