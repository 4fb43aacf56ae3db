"""What every registry operation shares: endpoints, credentials, pooled HTTP, URLs.

Also the media types, the manifest size limit and the digest helpers used by
both :mod:`~shared.registry.pull` and :mod:`~shared.registry.push`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx

from shared.content import parse_digest
from shared.diff import Descriptor
from shared.errors import BerthError, DataLoss, FailedPrecondition, InvalidArgument
from shared.registry.auth import Authorizer, CredentialsFunc, DockerConfig
from shared.registry.hosts import Capability, RegistryHost, registry_hosts
from shared.registry.reference import Reference, parse
from shared.registry.transport import Transport, endpoint_url

MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
)
RESOLVE_ACCEPT = ", ".join([*MANIFEST_MEDIA_TYPES, "*/*"])  # containerd's resolve Accept
MAX_MANIFEST_SIZE = 4 << 20  # containerd's MaxManifestSize
UPLOAD_CHUNK_SIZE = 16 << 20
OCTET_STREAM = "application/octet-stream"

PushResult = Literal["exists", "mounted", "uploaded"]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_digest(
    chunks: Iterable[bytes], desc: Descriptor, *, error: type[BerthError] = DataLoss
) -> Iterator[bytes]:
    """Pass ``chunks`` through, raising ``error`` as soon as they exceed ``desc.size`` and at
    the end if size or digest differ. For a whole blob (offset 0) only."""
    algorithm, expected = parse_digest(desc.digest)
    h, size = hashlib.new(algorithm), 0
    for chunk in chunks:
        size += len(chunk)
        if size > desc.size:
            raise error(f"{desc.digest}: more than the {desc.size} bytes described")
        h.update(chunk)
        yield chunk
    if size != desc.size or h.hexdigest() != expected:
        raise error(f"{desc.digest}: got {size} bytes with digest {algorithm}:{h.hexdigest()}")


def media_type_of(response: httpx.Response) -> str:
    """The Content-Type without parameters (containerd's getManifestMediaType)."""
    value: str = response.headers.get("content-type", "")
    return value.split(";", 1)[0].strip()


def content_length(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("content-length", -1))
    except ValueError:
        return -1


def read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            raise InvalidArgument(f"{what} is larger than {limit} bytes; refusing it")
    return bytes(data)


class Session:
    """What pull and push share: hosts, credentials, pooled HTTP, URLs."""

    def __init__(
        self,
        hosts_dir: Path | None = None,
        docker_config: Path | None = None,
        plain_http: bool = False,
        user_agent: str = "berth/0.1",
        *,
        credentials: CredentialsFunc | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        upload_chunk_size: int = UPLOAD_CHUNK_SIZE,
    ) -> None:
        """``credentials`` (host -> Credentials) overrides ``docker_config``; with neither,
        requests are anonymous. ``upload_chunk_size``: larger blobs are pushed in chunks."""
        self.hosts_dir = hosts_dir
        self.plain_http = plain_http
        self.upload_chunk_size = max(1, upload_chunk_size)
        if credentials is None and docker_config is not None:
            credentials = DockerConfig(docker_config)
        self._authorizer = Authorizer(credentials, where=str(docker_config or ""))
        self._transport = Transport(
            user_agent=user_agent, timeout=timeout, max_attempts=max_attempts, backoff=backoff
        )
        self._owns_transport = True

    def with_credentials(self, credentials: CredentialsFunc | None) -> Self:
        """A client that shares this one's connection pools but authenticates with
        ``credentials`` (e.g. the auth of one CRI PullImage request); closing it is a no-op."""
        clone = copy.copy(self)
        clone._authorizer = Authorizer(credentials)
        clone._owns_transport = False
        return clone

    def close(self) -> None:
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def hosts(self, host: str) -> list[RegistryHost]:
        """The endpoints for a registry host, as configured (see shared.registry.hosts)."""
        return registry_hosts(host, self.hosts_dir, plain_http=self.plain_http)

    def _endpoints(self, ref: Reference, capability: Capability) -> list[RegistryHost]:
        hosts = [h for h in self.hosts(ref.host) if h.can(capability)]
        if not hosts:
            name = str(capability.name).lower()
            raise FailedPrecondition(f"no endpoint for {ref.host} has the {name} capability")
        return hosts

    def _send(
        self,
        host: RegistryHost,
        ref: Reference,
        method: str,
        url: str,
        *,
        what: str,
        push: bool = False,
        extra_scopes: Iterable[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        content: bytes | None = None,
        stream: bool = False,
        follow_redirects: bool = True,
        attempts: int | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        action = "pull,push" if push else "pull"
        return self._transport.send(
            host,
            self._authorizer,
            method,
            url,
            scopes=[f"repository:{ref.repository}:{action}", *extra_scopes],
            what=what,
            headers=headers,
            content=content,
            stream=stream,
            follow_redirects=follow_redirects,
            attempts=attempts,
            idempotent=idempotent,
        )

    def _url(
        self, host: RegistryHost, ref: Reference, *parts: str, query: Iterable[tuple[str, str]] = ()
    ) -> str:
        return endpoint_url(host, ref.repository, *parts, query=tuple(query), namespace=ref.host)

    @staticmethod
    def _ref(ref: str | Reference) -> Reference:
        return ref if isinstance(ref, Reference) else parse(ref)
