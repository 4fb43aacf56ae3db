"""The content store contract: content-addressed blobs and resumable ingests.

This module knows nothing of gRPC, NATS or SQL. Implementations:

* ``services.content.local.LocalStore`` - blobs and ingests on one filesystem,
  no namespaces (containerd's ``content/local``);
* ``services.content.metadata.NamespacedStore`` - the same contract with
  namespaces, labels and leases, kept in the database, over a LocalStore;
* ``shared.proxy.content.ContentProxy`` - the same contract over gRPC, for
  the other services and for clients.

The namespace (and lease) of a call come from ``shared.context``.

Lifecycle of an ingest (what ``ctr content ingest`` and a pull do)::

    w = store.writer(ref="layer-sha256:ab..", total=size, expected=digest)
    # AlreadyExists here: the blob is present; nothing to do.
    # Unavailable here: another writer holds the ref; retry later.
    st = w.status()                      # resume: st.offset bytes are already there
    w.write(chunk)                       # appends; returns bytes written
    info = w.commit(size, digest, labels)   # verifies, then the blob appears at once
    w.close()                            # always; keeps an uncommitted ingest for resume

* A ref names one ingest. Writes are append-only; ``truncate(0)`` restarts.
* ``commit`` checks the size (when given) and the digest (when given) of the
  data. On mismatch it raises FailedPrecondition and keeps the ingest (the
  writer may be finished, as a gRPC stream ends on error: close it and open
  the ref again); if the blob already exists it raises AlreadyExists and
  drops the ingest. A committed blob is never visible half-written.
* ``close`` releases the ref without committing; the data stays and a later
  ``writer(ref)`` resumes at ``status().offset``. ``abort(ref)`` discards it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shared.errors import InvalidArgument

CHUNK_SIZE = 1 << 20  # reads and writes move 1 MiB at a time (measured: 64 KiB costs 2-3x CPU)
MAX_LABELS_SIZE = 4096  # key + value, as containerd's labels.Validate
MAX_REF_LENGTH = 512

_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST = re.compile(r"(sha256|sha384|sha512):([a-f0-9]+)\Z")


@dataclass(frozen=True)
class Info:
    digest: str
    size: int
    created_at: int  # nanoseconds since the epoch
    updated_at: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    ref: str
    offset: int
    total: int
    expected: str
    started_at: int
    updated_at: int


def parse_digest(digest: str) -> tuple[str, str]:
    """Split ``algorithm:hex`` after validating it; InvalidArgument if malformed."""
    match = _DIGEST.match(digest or "")
    if match is None or len(match.group(2)) != _ALGORITHMS[match.group(1)]:
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 lowercase hex>")
    return match.group(1), match.group(2)


def hasher(algorithm: str = "sha256") -> hashlib._Hash:
    return hashlib.new(algorithm)


def validate_ref(ref: str) -> str:
    """Refs are free-form names chosen by clients, but never paths or control text."""
    if not ref:
        raise InvalidArgument("ref must not be empty")
    if len(ref.encode()) > MAX_REF_LENGTH:
        raise InvalidArgument(f"ref is longer than {MAX_REF_LENGTH} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        raise InvalidArgument(f"ref {ref!r} contains control characters")
    if ref.startswith("/") or ".." in ref.split("/"):
        raise InvalidArgument(f"ref {ref!r} must not look like a filesystem path")
    return ref


def validate_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    for key, value in labels.items():
        if not key:
            raise InvalidArgument("label key must not be empty")
        if len(key) + len(value) > MAX_LABELS_SIZE:
            raise InvalidArgument(
                f"label {key[:64]!r}: key and value longer than {MAX_LABELS_SIZE} bytes"
            )
    return labels


@runtime_checkable
class Writer(Protocol):
    @property
    def ref(self) -> str: ...

    def status(self) -> Status: ...

    def digest(self) -> str:
        """Digest of the bytes written so far."""
        ...

    def write(self, data: bytes) -> int: ...

    def truncate(self, size: int) -> None:
        """Only ``truncate(0)`` (start over) is supported, as in containerd."""
        ...

    def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> Info:
        """Verify and publish the blob; ``size`` 0 and ``expected`` "" skip those checks."""
        ...

    def close(self) -> None: ...


class Provider(Protocol):
    def info(self, digest: str) -> Info:
        """NotFound if the blob is not in the store (in this namespace)."""
        ...

    def read(self, digest: str, offset: int = 0, size: int = 0) -> Iterator[bytes]:
        """Chunks of the blob from ``offset``; ``size`` 0 reads to the end.

        OutOfRange if ``offset`` is past the end. Raises before the first chunk
        if the blob is missing.
        """
        ...


class Ingester(Protocol):
    def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer: ...


class IngestManager(Protocol):
    def status(self, ref: str) -> Status: ...

    def list_statuses(self, filters: Sequence[str] = ()) -> list[Status]:
        """Ingests in progress; filter fields ``ref`` and ``expected``."""
        ...

    def abort(self, ref: str) -> None: ...


class Manager(Protocol):
    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Change labels: paths ``labels`` or ``labels.<key>``; none means all labels."""
        ...

    def walk(self, filters: Sequence[str] = ()) -> Iterator[Info]:
        """Every blob matching the filters (fields ``digest``, ``size``, ``labels.<key>``)."""
        ...

    def delete(self, digest: str) -> None: ...


class Store(Provider, Ingester, IngestManager, Manager, Protocol):
    pass
