"""Pull: resolve a reference, fetch manifests and (resumable) blobs (containerd's
resolver and fetcher)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from shared.content import CHUNK_SIZE, parse_digest
from shared.diff import Descriptor
from shared.errors import BerthError, DataLoss, InvalidArgument, NotFound, OutOfRange
from shared.registry.hosts import Capability, RegistryHost
from shared.registry.reference import Reference
from shared.registry.session import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    OCTET_STREAM,
    RESOLVE_ACCEPT,
    Session,
    content_length,
    digest_of,
    media_type_of,
    read_limited,
)
from shared.registry.status import error_for, transport_error


class Puller(Session):
    """containerd's resolver (HEAD, else GET, the manifest) and fetcher (GET, resumable)."""

    def resolve(self, ref: str | Reference) -> tuple[str, Descriptor]:
        """The name and the manifest (or index) descriptor ``ref`` points at."""
        r = self._ref(ref)
        if not r.object:
            raise InvalidArgument(f"{r}: object required (a tag or a digest)")
        hosts = self._endpoints(r, Capability.PULL if r.digest else Capability.RESOLVE)
        paths = [("manifests", r.object)]
        if r.digest:
            paths.append(("blobs", r.digest))
        first_error: BerthError | None = None
        for parts in paths:
            for i, host in enumerate(hosts):
                try:
                    desc = self._resolve_at(host, r, parts, last=i == len(hosts) - 1)
                except BerthError as e:
                    first_error = first_error or e
                    continue
                if desc is not None:
                    return str(r), desc
        raise first_error or NotFound(f"{r} not found in {r.host}")

    def _resolve_at(
        self, host: RegistryHost, r: Reference, parts: tuple[str, str], *, last: bool
    ) -> Descriptor | None:
        url = self._url(host, r, *parts)
        what = f"{parts[0][:-1]} {r}"
        headers = [("Accept", RESOLVE_ACCEPT)]
        attempts = None if last else 1
        response = self._send(host, r, "HEAD", url, what=what, headers=headers, attempts=attempts)
        if response.status_code == 404:
            return None
        head_works = response.status_code != 405  # registries without HEAD: GET, as containerd
        if response.status_code >= 300 and head_works:
            raise error_for(response, what, host.host)
        digest = r.digest
        size = content_length(response) if head_works else -1
        if not digest and (header := response.headers.get("docker-content-digest", "")):
            try:
                parse_digest(header)
            except InvalidArgument as e:
                raise InvalidArgument(f"{host.host}: bad Docker-Content-Digest: {e}") from e
            digest = header
        media_type = media_type_of(response)
        if not digest or size < 0:  # HEAD said too little: read the manifest itself
            response = self._send(
                host, r, "GET", url, what=what, headers=headers, stream=True, attempts=attempts
            )
            try:
                if response.status_code == 404:
                    return None
                if response.status_code >= 300:
                    raise error_for(response, what, host.host)
                data = read_limited(response, MAX_MANIFEST_SIZE, f"{what} from {host.host}")
            except httpx.HTTPError as e:
                raise transport_error(e, f"GET {what}", host.host) from e
            finally:
                response.close()
            media_type, size = media_type_of(response), len(data)
            if digest and digest_of(data) != digest:
                raise DataLoss(f"{host.host} answered {what} with content of another digest")
            digest = digest or digest_of(data)
        if size > MAX_MANIFEST_SIZE:
            raise InvalidArgument(
                f"{what} from {host.host} is {size} bytes, larger than "
                f"{MAX_MANIFEST_SIZE}; refusing it"
            )
        return Descriptor(media_type=media_type, digest=digest, size=size)

    def fetch_manifest(self, ref: str | Reference, desc: Descriptor) -> bytes:
        """The manifest or index ``desc`` of ``ref``'s repository, verified."""
        r = self._ref(ref)
        parse_digest(desc.digest)
        if desc.media_type not in MANIFEST_MEDIA_TYPES:
            raise InvalidArgument(
                f"{desc.digest}: media type {desc.media_type!r} is not a "
                "manifest or index berth can read"
            )
        if desc.size > MAX_MANIFEST_SIZE:
            raise InvalidArgument(
                f"manifest {desc.digest} is {desc.size} bytes, larger than "
                f"{MAX_MANIFEST_SIZE}; refusing it"
            )
        hosts = self._endpoints(r, Capability.PULL)
        what = f"manifest {r.name}@{desc.digest}"
        first_error: BerthError | None = None
        not_found: NotFound | None = None
        for i, host in enumerate(hosts):
            try:
                return self._manifest_at(host, r, desc, what, last=i == len(hosts) - 1)
            except NotFound as e:
                not_found = not_found or e
            except BerthError as e:
                first_error = first_error or e
        raise first_error or not_found or NotFound(f"{what} not found in {r.host}")

    def _manifest_at(
        self, host: RegistryHost, r: Reference, desc: Descriptor, what: str, *, last: bool
    ) -> bytes:
        url = self._url(host, r, "manifests", desc.digest)
        headers = [("Accept", f"{desc.media_type}, */*")]
        response = self._send(
            host,
            r,
            "GET",
            url,
            what=what,
            headers=headers,
            stream=True,
            attempts=None if last else 1,
        )
        try:
            if response.status_code >= 300:
                raise error_for(response, what, host.host)
            data = read_limited(response, MAX_MANIFEST_SIZE, f"{what} from {host.host}")
        except httpx.HTTPError as e:
            raise transport_error(e, f"GET {what}", host.host) from e
        finally:
            response.close()
        if len(data) != desc.size or digest_of(data) != desc.digest:
            raise DataLoss(
                f"{host.host} answered {what} with {len(data)} bytes of digest "
                f"{digest_of(data)}, not {desc.size} bytes of {desc.digest}"
            )
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"{what} from {host.host} is not JSON: {e}") from e
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{what} from {host.host} is not a JSON object")
        if doc.get("mediaType", desc.media_type) != desc.media_type:
            raise InvalidArgument(
                f"{what} from {host.host} says mediaType "
                f"{doc.get('mediaType')!r}, not {desc.media_type!r}"
            )
        return data

    def fetch_blob(
        self, ref: str | Reference, desc: Descriptor, offset: int = 0
    ) -> Iterator[bytes]:
        """The bytes of blob ``desc`` from ``offset`` on, in chunks of up to 1 MiB.

        Lazy: errors (NotFound included) come from the first ``next()``. A broken
        download is resumed with ``Range`` from the last byte received (bytes
        received but not yet yielded are kept), up to ``max_attempts`` failures in
        a row without progress. A server that ignores ``Range`` is read from the
        start and the bytes before the offset dropped. The digest is the caller's
        to check (a content ingest does; or use :func:`verify_digest`).
        """
        r = self._ref(ref)
        parse_digest(desc.digest)
        if not 0 <= offset <= desc.size:
            raise OutOfRange(f"offset {offset} is outside blob {desc.digest} of {desc.size} bytes")
        return self._blob_chunks(r, desc, offset)

    def _blob_chunks(self, r: Reference, desc: Descriptor, offset: int) -> Iterator[bytes]:
        hosts = self._endpoints(r, Capability.PULL)
        what = f"blob {r.name}@{desc.digest}"
        received, failures, pending = offset, 0, bytearray()
        while received < desc.size:
            try:
                response, host = self._open_blob(hosts, r, desc, what, received)
            except BerthError:
                if pending:  # as below: what arrived is the caller's to keep
                    yield bytes(pending)
                    pending.clear()
                raise
            try:
                skip = 0  # a server that ignores Range sends everything again
                content_range = response.headers.get("content-range", "")
                if received and not content_range:
                    skip = received
                elif received and not content_range.startswith(f"bytes {received}-"):
                    raise InvalidArgument(
                        f"{host.host} answered a range request for {what} "
                        f"with Content-Range {content_range!r}"
                    )
                for piece in response.iter_bytes():
                    if skip:
                        dropped = min(skip, len(piece))
                        piece, skip = piece[dropped:], skip - dropped
                    if received + len(piece) > desc.size:
                        raise DataLoss(f"{host.host} sent more than {desc.size} bytes for {what}")
                    received += len(piece)
                    failures = 0
                    pending += piece
                    while len(pending) >= CHUNK_SIZE:
                        chunk = bytes(pending[:CHUNK_SIZE])
                        del pending[:CHUNK_SIZE]
                        yield chunk
                if received < desc.size:
                    raise httpx.RemoteProtocolError(f"body ended at {received} of {desc.size}")
            except httpx.TransportError as e:
                failures += 1
                if failures >= self._transport.max_attempts:
                    if pending:
                        # Hand over what did arrive: a content ingest keeps it for the next try.
                        yield bytes(pending)
                        pending.clear()
                    raise transport_error(e, f"GET {what}", host.host) from e
                self._transport.backoff_sleep(failures)
            finally:
                response.close()
        if pending:
            yield bytes(pending)

    def _open_blob(
        self, hosts: list[RegistryHost], r: Reference, desc: Descriptor, what: str, position: int
    ) -> tuple[httpx.Response, RegistryHost]:
        headers = [("Accept", f"{desc.media_type or OCTET_STREAM}, */*")]
        if position:
            headers.append(("Range", f"bytes={position}-"))
        first_error: BerthError | None = None
        not_found: BerthError | None = None  # the first 404, with what the registry said
        for i, host in enumerate(hosts):
            url = self._url(host, r, "blobs", desc.digest)
            try:
                response = self._send(
                    host,
                    r,
                    "GET",
                    url,
                    what=what,
                    headers=headers,
                    stream=True,
                    attempts=None if i == len(hosts) - 1 else 1,
                )
            except BerthError as e:
                first_error = first_error or e
                continue
            if response.status_code in (200, 206):
                return response, host
            error = error_for(response, what, host.host)
            if response.status_code == 404:
                not_found = not_found or error
            else:
                first_error = first_error or error
        raise first_error or not_found or NotFound(f"{what} not found in {r.host}")
