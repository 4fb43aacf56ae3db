"""Blobs and ingests on one filesystem, without namespaces (containerd's content/local).

Layout under the store root (``<root>/content``)::

    blobs/sha256/<hex>            committed blobs, read-only, shared by all namespaces
    ingest/<sha256(ref)>/data     bytes written so far
    ingest/<sha256(ref)>/ref      the ref, for listing
    ingest/<sha256(ref)>/total    expected size, when known
    ingest/<sha256(ref)>/startedat
    ingest/<sha256(ref)>/lock     flock held by the one live writer

A ref is locked with ``flock`` on its ``lock`` file: the kernel drops the lock
when the holder dies (``kill -9`` included), and it works between processes
sharing the directory - several content replicas on one volume. A blob appears
by ``rename`` of a verified, fsynced ingest file: readers see all of it or
nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from shared import content, filters
from shared.content import CHUNK_SIZE, Info, Status
from shared.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)


def _os_error(e: OSError, what: str) -> Exception:
    """Map a filesystem failure to the error class callers can act on."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{what}: no space left on device")
    return e


def _read_text(path: Path, default: str = "") -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return default


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class StatusAdaptor:
    def __init__(self, status: Status) -> None:
        self._status = status

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if len(path) == 1 and path[0] == "ref":
            return self._status.ref, bool(self._status.ref)
        if len(path) == 1 and path[0] == "expected":
            return self._status.expected, bool(self._status.expected)
        return "", False


class InfoAdaptor:
    def __init__(self, info: Info) -> None:
        self._info = info

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "digest" and len(path) == 1:
            return self._info.digest, True
        if path[0] == "size" and len(path) == 1:
            return str(self._info.size), True
        if path[0] == "labels":
            if not self._info.labels or len(path) == 1:
                return "", False
            key = ".".join(path[1:])
            value = self._info.labels.get(key)
            return (value, True) if value is not None else ("", False)
        return "", False


class LocalWriter:
    """One open ingest; holds its ref's lock until closed."""

    def __init__(self, store: LocalStore, ref: str, directory: Path, lock_fd: int) -> None:
        self._store = store
        self._ref = ref
        self._dir = directory
        self._lock_fd = lock_fd
        self._data = directory / "data"
        self._fd = os.open(self._data, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        st = os.fstat(self._fd)
        self._offset = st.st_size
        self._hash: hashlib._Hash | None = None  # built lazily: resuming re-reads the data
        self._closed = False
        # Status is answered from memory: it is asked before every chunk.
        recorded = store.status(ref)
        self._started_at = recorded.started_at
        self._total = recorded.total
        self._updated_at = st.st_mtime_ns or recorded.started_at

    @property
    def ref(self) -> str:
        return self._ref

    def _digester(self) -> hashlib._Hash:
        if self._hash is None:
            h = content.hasher()
            with open(self._data, "rb") as f:
                remaining = self._offset
                while remaining > 0:
                    chunk = f.read(min(CHUNK_SIZE, remaining))
                    if not chunk:
                        raise DataLoss(f"ingest {self._ref}: data shorter than recorded")
                    h.update(chunk)
                    remaining -= len(chunk)
            self._hash = h
        return self._hash

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"writer for {self._ref} is closed")
        if not self._dir.exists():
            raise NotFound(f"ingest {self._ref} was aborted")

    def status(self) -> Status:
        return Status(
            ref=self._ref,
            offset=self._offset,
            total=self._total,
            expected="",
            started_at=self._started_at,
            updated_at=self._updated_at,
        )

    def digest(self) -> str:
        return "sha256:" + self._digester().hexdigest()

    def write(self, data: bytes) -> int:
        self._check_open()
        digester = self._digester()
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError as e:
            # Keep the file equal to what we report, so a resume starts clean.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
            raise _os_error(e, f"write to ingest {self._ref}") from e
        digester.update(view)
        self._offset += written
        self._updated_at = time.time_ns()
        return written

    def truncate(self, size: int) -> None:
        self._check_open()
        if size != 0:
            raise InvalidArgument("ingests can only be truncated to 0")
        os.ftruncate(self._fd, 0)
        self._offset = 0
        self._hash = content.hasher()
        self._updated_at = time.time_ns()

    def verify(self, size: int, expected: str) -> str:
        """The digest of the data, after checking it against ``size`` and ``expected``."""
        self._check_open()
        if expected:
            content.parse_digest(expected)
        if size > 0 and size != self._offset:
            raise FailedPrecondition(f"unexpected commit size {self._offset}, expected {size}")
        digest = self.digest()
        if expected and expected != digest:
            raise FailedPrecondition(f"unexpected commit digest {digest}, expected {expected}")
        return digest

    def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> Info:
        """Verify, then rename into place. Labels are the metadata layer's business."""
        digest = self.verify(size, expected)
        os.fsync(self._fd)
        target = self._store.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self.discard()
            raise AlreadyExists(f"content {digest}: already exists")
        os.chmod(self._data, 0o444)
        os.rename(self._data, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.discard()
        return self._store.info(digest)

    def discard(self) -> None:
        """Drop the ingest and close the writer."""
        shutil.rmtree(self._dir, ignore_errors=True)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        # Closing the descriptor drops the flock.
        os.close(self._lock_fd)


class LocalStore:
    """The content contract over a directory; no namespaces and no labels."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.ingests = root / "ingest"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingests.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, hexdigest = content.parse_digest(digest)
        return self.blobs / algorithm / hexdigest

    def ingest_dir(self, ref: str) -> Path:
        # Hashing the ref keeps any ref text out of the path.
        return self.ingests / hashlib.sha256(ref.encode()).hexdigest()

    # -- Provider ------------------------------------------------------------

    def info(self, digest: str) -> Info:
        path = self.blob_path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None
        return Info(digest, st.st_size, st.st_mtime_ns, st.st_mtime_ns, {})

    def read(self, digest: str, offset: int = 0, size: int = 0) -> Iterator[bytes]:
        path = self.blob_path(digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None
        total = os.fstat(f.fileno()).st_size
        if offset < 0 or offset > total:
            f.close()
            raise OutOfRange(f"read at offset {offset} past object length {total} bytes")
        end = total if size <= 0 or offset + size > total else offset + size
        return self._chunks(f, offset, end)

    @staticmethod
    def _chunks(f: BinaryIO, offset: int, end: int) -> Iterator[bytes]:
        with f:
            f.seek(offset)
            position = offset
            while position < end:
                chunk = f.read(min(CHUNK_SIZE, end - position))
                if not chunk:
                    raise DataLoss(f"blob ended at {position} of {end} bytes")
                position += len(chunk)
                yield chunk

    # -- Ingester --------------------------------------------------------------

    def writer(self, ref: str, total: int = 0, expected: str = "") -> LocalWriter:
        content.validate_ref(ref)
        if total < 0:
            raise InvalidArgument(f"total {total} must not be negative")
        if expected:
            content.parse_digest(expected)
            if self.blob_path(expected).exists():
                raise AlreadyExists(f"content {expected}: already exists")
        directory = self.ingest_dir(ref)
        try:
            directory.mkdir(exist_ok=True)
        except OSError as e:
            raise _os_error(e, f"ingest {ref}") from e
        lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise Unavailable(f"ref {ref} locked: another writer is active") from None
        try:
            self._prepare_ingest(directory, ref, total)
            return LocalWriter(self, ref, directory, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _prepare_ingest(directory: Path, ref: str, total: int) -> None:
        if not (directory / "ref").exists():
            _write_atomic(directory / "startedat", str(time.time_ns()))
            _write_atomic(directory / "total", str(total))
            _write_atomic(directory / "ref", ref)
            return
        known = int(_read_text(directory / "total", "0") or 0)
        if total and known and total != known:
            raise FailedPrecondition(
                f"ref {ref}: total {total} differs from the ingest's recorded total {known}"
            )
        if total and not known:
            _write_atomic(directory / "total", str(total))

    # -- IngestManager ---------------------------------------------------------

    def _status_of(self, directory: Path) -> Status:
        ref = _read_text(directory / "ref")
        if not ref:
            raise NotFound("ingest not found")
        try:
            st = (directory / "data").stat()
            offset, updated = st.st_size, st.st_mtime_ns
        except FileNotFoundError:
            offset, updated = 0, 0
        started = int(_read_text(directory / "startedat", "0") or 0)
        return Status(
            ref=ref,
            offset=offset,
            total=int(_read_text(directory / "total", "0") or 0),
            expected="",
            started_at=started,
            updated_at=updated or started,
        )

    def status(self, ref: str) -> Status:
        content.validate_ref(ref)
        try:
            return self._status_of(self.ingest_dir(ref))
        except NotFound:
            raise NotFound(f"ingest {ref}: not found") from None

    def list_statuses(self, filter_exprs: Sequence[str] = ()) -> list[Status]:
        match = filters.parse_all(list(filter_exprs))
        statuses = []
        for directory in sorted(self.ingests.iterdir()):
            with contextlib.suppress(NotFound, FileNotFoundError):
                st = self._status_of(directory)
                if match.match(StatusAdaptor(st)):
                    statuses.append(st)
        return statuses

    def abort(self, ref: str) -> None:
        content.validate_ref(ref)
        directory = self.ingest_dir(ref)
        if not (directory / "ref").exists():
            raise NotFound(f"ingest {ref}: not found")
        shutil.rmtree(directory, ignore_errors=True)

    # -- Manager ---------------------------------------------------------------

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        raise Unimplemented("the local content store keeps no labels")

    def walk(self, filter_exprs: Sequence[str] = ()) -> Iterator[Info]:
        match = filters.parse_all(list(filter_exprs))
        for algorithm_dir in sorted(self.blobs.iterdir()):
            for path in sorted(algorithm_dir.iterdir()):
                if path.name.startswith("."):
                    continue
                with contextlib.suppress(NotFound, InvalidArgument):
                    info = self.info(f"{algorithm_dir.name}:{path.name}")
                    if match.match(InfoAdaptor(info)):
                        yield info

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.blob_path(digest))
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None
