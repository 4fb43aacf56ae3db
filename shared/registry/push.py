"""Push: blobs (cross-repository mount, monolithic or chunked upload) and manifests
(containerd's pusher, plus chunked uploads for large blobs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import httpx

from shared.content import parse_digest
from shared.diff import Descriptor
from shared.errors import BerthError, DataLoss, InvalidArgument
from shared.registry.hosts import Capability, RegistryHost
from shared.registry.reference import Reference
from shared.registry.session import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    OCTET_STREAM,
    PushResult,
    Session,
    digest_of,
    verify_digest,
)
from shared.registry.status import error_for


class Pusher(Session):
    """containerd's pusher: HEAD first (nothing to do if the registry has it), then
    mount, or POST an upload and PUT (or PATCH..., PUT) the bytes; manifests last."""

    def _push_host(self, r: Reference) -> RegistryHost:
        return self._endpoints(r, Capability.PUSH)[0]

    def blob_exists(self, ref: str | Reference, desc: Descriptor) -> bool:
        r = self._ref(ref)
        parse_digest(desc.digest)
        return self._blob_exists(self._push_host(r), r, desc, push=False)

    def _blob_exists(
        self, host: RegistryHost, r: Reference, desc: Descriptor, *, push: bool
    ) -> bool:
        what = f"blob {r.name}@{desc.digest}"
        url = self._url(host, r, "blobs", desc.digest)
        response = self._send(host, r, "HEAD", url, what=what, push=push)
        if response.status_code == 404:
            return False
        if response.status_code >= 300:
            raise error_for(response, what, host.host)
        return True

    def push_blob(
        self,
        ref: str | Reference,
        desc: Descriptor,
        chunks: Iterable[bytes],
        mount_from: str | None = None,
    ) -> PushResult:
        """Upload blob ``desc`` to ``ref``'s repository unless it is there already.

        ``mount_from`` names another repository of the same registry that has the
        blob ("library/alpine"): the registry is asked to link it (no upload). Blobs up
        to ``upload_chunk_size`` go in one PUT, larger ones in PATCH chunks of that size.
        The data must match ``desc`` (InvalidArgument otherwise; nothing is committed).
        An upload step is not retried once sent: on Unavailable, push again.
        """
        r = self._ref(ref)
        parse_digest(desc.digest)
        host = self._push_host(r)
        if mount_from and mount_from.startswith(r.host + "/"):
            mount_from = mount_from[len(r.host) + 1 :]
        extra = [f"repository:{mount_from}:pull"] if mount_from else []
        if self._blob_exists(host, r, desc, push=True):
            return "exists"
        what = f"upload of blob {r.name}@{desc.digest}"
        query = [("mount", desc.digest), ("from", mount_from)] if mount_from else []
        url = self._url(host, r, "blobs", "uploads/", query=query)
        response = self._send(
            host,
            r,
            "POST",
            url,
            what=what,
            push=True,
            extra_scopes=extra,
            follow_redirects=False,
            idempotent=False,
        )
        if response.status_code == 201 and mount_from:
            return "mounted"
        location = self._location(response, what, host)
        try:
            if desc.size <= self.upload_chunk_size:
                self._put_whole(host, r, desc, chunks, location, what)
            else:
                self._put_chunked(host, r, desc, chunks, location, what)
        except BaseException:
            self._cancel(host, r, location, what)
            raise
        return "uploaded"

    def _location(self, response: httpx.Response, what: str, host: RegistryHost) -> str:
        if response.status_code not in (201, 202, 204):
            raise error_for(response, what, host.host)
        location = response.headers.get("location", "")
        if not location:
            raise InvalidArgument(f"{host.host} answered the {what} without a Location")
        return str(response.request.url.join(location))

    def _put_whole(
        self,
        host: RegistryHost,
        r: Reference,
        desc: Descriptor,
        chunks: Iterable[bytes],
        location: str,
        what: str,
    ) -> None:
        data = b"".join(verify_digest(chunks, desc, error=InvalidArgument))
        self._commit_upload(host, r, desc, location, what, data)

    def _put_chunked(
        self,
        host: RegistryHost,
        r: Reference,
        desc: Descriptor,
        chunks: Iterable[bytes],
        location: str,
        what: str,
    ) -> None:
        offset, buffer = 0, bytearray()
        for chunk in verify_digest(chunks, desc, error=InvalidArgument):
            buffer += chunk
            while len(buffer) >= self.upload_chunk_size:
                part = bytes(buffer[: self.upload_chunk_size])
                del buffer[: self.upload_chunk_size]
                location = self._patch(host, r, location, offset, part, what)
                offset += len(part)
        if buffer:
            location = self._patch(host, r, location, offset, bytes(buffer), what)
        self._commit_upload(host, r, desc, location, what, b"")

    def _patch(
        self, host: RegistryHost, r: Reference, location: str, offset: int, data: bytes, what: str
    ) -> str:
        """Send one chunk; the registry answers with the Location of the next step."""
        content_range = f"{offset}-{offset + len(data) - 1}"  # inclusive, no "bytes " prefix
        response = self._send(
            host,
            r,
            "PATCH",
            location,
            what=what,
            push=True,
            content=data,
            headers=[("Content-Type", OCTET_STREAM), ("Content-Range", content_range)],
            follow_redirects=False,
            idempotent=False,
        )
        response.read()
        return self._location(response, what, host)

    def _commit_upload(
        self,
        host: RegistryHost,
        r: Reference,
        desc: Descriptor,
        location: str,
        what: str,
        data: bytes,
    ) -> None:
        url = str(httpx.URL(location).copy_merge_params({"digest": desc.digest}))
        headers = [("Content-Type", OCTET_STREAM)]
        response = self._send(
            host,
            r,
            "PUT",
            url,
            what=what,
            push=True,
            content=data,
            headers=headers,
            follow_redirects=False,
            idempotent=False,
        )
        if response.status_code not in (201, 204):
            raise error_for(response, what, host.host)
        got = response.headers.get("docker-content-digest", desc.digest)
        if got != desc.digest:
            raise DataLoss(f"{host.host} stored {what} as {got}")

    def _cancel(self, host: RegistryHost, r: Reference, location: str, what: str) -> None:
        with contextlib.suppress(BerthError):  # the registry purges abandoned uploads itself
            self._send(
                host,
                r,
                "DELETE",
                location,
                what=what,
                push=True,
                attempts=1,
                follow_redirects=False,
            ).close()

    def push_manifest(self, ref: str | Reference, media_type: str, data: bytes) -> str:
        """PUT a manifest or index under ``ref``'s tag (or digest); returns its digest.

        The blobs (and, for an index, the manifests) it names must be pushed first."""
        r = self._ref(ref)
        if not r.object:
            raise InvalidArgument(f"{r}: object required (a tag or a digest)")
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise InvalidArgument(f"media type {media_type!r} is not a manifest or index")
        if len(data) > MAX_MANIFEST_SIZE:
            raise InvalidArgument(
                f"manifest of {len(data)} bytes is larger than {MAX_MANIFEST_SIZE}"
            )
        digest = digest_of(data)
        if r.digest and r.digest != digest:
            raise InvalidArgument(f"{r}: the manifest's digest is {digest}")
        host = self._push_host(r)
        what = f"manifest {r}"
        url = self._url(host, r, "manifests", r.tag or r.digest)
        response = self._send(
            host,
            r,
            "PUT",
            url,
            what=what,
            push=True,
            content=data,
            headers=[("Content-Type", media_type)],
            follow_redirects=False,
        )
        if response.status_code not in (200, 201, 204):
            raise error_for(response, what, host.host)
        got = response.headers.get("docker-content-digest", digest)
        if got != digest:
            raise DataLoss(f"{host.host} stored {what} as {got}, not {digest}")
        return digest
