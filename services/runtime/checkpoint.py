"""Checkpoints as content: criu's image directory as a tar blob, and back.

What containerd's tasks service does around the shim's dump and restore:
the dump goes into the content store as
``application/vnd.containerd.container.criu.checkpoint.criu.tar`` and the
container's spec as ``…checkpoint.config.v1+proto`` (a marshalled ``Any``), so
that a client can make an image of them, push it, pull it elsewhere and
restore. A restore unpacks the tar blob into a directory for ``runc restore``.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import tarfile
from pathlib import Path
from typing import IO

from google.protobuf import any_pb2

from shared.containers import AnyValue
from shared.content import CHUNK_SIZE, Store
from shared.diff import Descriptor
from shared.errors import AlreadyExists, InvalidArgument

MEDIA_TYPE_CRIU = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
MEDIA_TYPE_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"


class _ContentSink:
    """A write-only file object that streams into a content writer, hashing as it goes."""

    def __init__(self, store: Store, ref: str) -> None:
        self._writer = store.writer(ref)
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._hash.update(data)
        self.size += len(data)
        if len(self._buffer) >= CHUNK_SIZE:
            self._writer.write(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def commit(self, labels: dict[str, str] | None = None) -> str:
        if self._buffer:
            self._writer.write(bytes(self._buffer))
            self._buffer.clear()
        digest = "sha256:" + self._hash.hexdigest()
        try:
            self._writer.commit(self.size, digest, labels)
        except AlreadyExists:
            pass
        finally:
            self._writer.close()
        return digest

    def abort(self) -> None:
        self._writer.close()


def store_image_dir(store: Store, directory: Path) -> Descriptor:
    """Tar criu's image directory into the content store."""
    sink = _ContentSink(store, f"checkpoint-{secrets.token_hex(8)}")
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path in sorted(directory.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
        digest = sink.commit()
    except BaseException:
        sink.abort()
        raise
    return Descriptor(MEDIA_TYPE_CRIU, digest, sink.size)


def store_spec(store: Store, spec: AnyValue) -> Descriptor:
    data = any_pb2.Any(type_url=spec.type_url, value=spec.value).SerializeToString()
    sink = _ContentSink(store, f"checkpoint-config-{secrets.token_hex(8)}")
    sink.write(data)
    digest = sink.commit()
    return Descriptor(MEDIA_TYPE_CONFIG, digest, len(data))


class _ChunkReader:
    """A read-only file object over content chunks (tarfile reads the stream once)."""

    def __init__(self, chunks: object) -> None:
        self._chunks = iter(chunks)  # type: ignore[call-overload]
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        if size < 0:
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out


def extract_image_dir(store: Store, desc: Descriptor, target: Path) -> None:
    """Unpack a checkpoint blob; only regular files and directories, inside ``target``."""
    if desc.media_type != MEDIA_TYPE_CRIU:
        raise InvalidArgument(f"unsupported checkpoint type {desc.media_type!r}")
    target.mkdir(parents=True, exist_ok=True)
    reader: IO[bytes] = _ChunkReader(store.read(desc.digest))  # type: ignore[assignment]
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            # The "data" filter refuses absolute paths, "..", links out of the tree and devices.
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as e:
        with contextlib.suppress(OSError):
            for path in sorted(target.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
        raise InvalidArgument(f"checkpoint {desc.digest} cannot be unpacked: {e}") from e
