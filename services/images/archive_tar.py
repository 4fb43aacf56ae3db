"""Strict sequential reading of a tar from a stream that cannot seek.

Headers are checked (checksums, PAX records, GNU long names); the archive must
end with its end-of-archive block, so a truncated upload is an error, never a
short import. Sparse files are refused; nothing of a member's data is held
beyond one chunk.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from shared import oci
from shared.content import CHUNK_SIZE
from shared.errors import InvalidArgument

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_HEADER_ONLY = frozenset(b"123456")  # links, devices, directories, FIFOs: no data follows
_META_TYPES = frozenset({tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.XGLTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})  # fmt: skip


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Member:
    name: str  # cleaned path
    type: bytes
    size: int
    linkname: str


class TarStream:
    """Strict sequential reading of a tar from a stream that cannot seek."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self.offset = 0
        self._left = 0  # data of the current member not read yet
        self._padding = 0

    def _read(self, n: int, what: str) -> bytes:
        parts = []
        while n:
            chunk = self._source.read(min(n, CHUNK_SIZE))
            if not chunk:
                raise InvalidArgument(
                    f"archive is truncated: it ends in {what} at byte {self.offset}"
                )
            parts.append(chunk)
            n -= len(chunk)
            self.offset += len(chunk)
        return b"".join(parts)

    def chunks(self) -> Iterator[bytes]:
        """The current member's data, in pieces of CHUNK_SIZE (gathered from smaller reads)."""
        while self._left:
            chunk = self._read(min(self._left, CHUNK_SIZE), "a file")
            self._left -= len(chunk)
            yield chunk

    def members(self) -> Iterator[Member]:
        while True:
            for _ in self.chunks():
                pass
            self._read(self._padding, "padding")
            member = self._next()
            if member is None:
                return
            yield member

    def _next(self) -> Member | None:
        pax: dict[str, str] = {}
        long_name = long_link = ""
        while True:
            at = self.offset
            block = self._read(_BLOCK, "a header")
            if block == _ZERO_BLOCK:
                return None  # end of archive: what follows is padding
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as e:
                raise InvalidArgument(f"archive: no valid tar header at byte {at}: {e}") from None
            padding = -info.size % _BLOCK
            if info.type in _META_TYPES:
                if info.size > oci.MAX_MANIFEST_SIZE:
                    raise InvalidArgument(f"archive: a {info.size}-byte tar extended header")
                data = self._read(info.size, "a header")
                self._read(padding, "padding")
                if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                    pax.update(_pax_records(data, at))
                elif info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif info.type == tarfile.GNUTYPE_LONGLINK:
                    long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            if info.type == tarfile.GNUTYPE_SPARSE or "GNU.sparse.major" in pax:
                raise InvalidArgument(f"archive: sparse file {info.name!r} is not supported")
            size = int(pax.get("size", info.size))
            self._left = 0 if info.type[0] in _HEADER_ONLY else size
            self._padding = -self._left % _BLOCK
            name = pax.get("path") or long_name or info.name
            link = pax.get("linkpath") or long_link or info.linkname
            return Member(posixpath.normpath(name), info.type, size, link)


def _pax_records(data: bytes, at: int) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
            raise InvalidArgument(f"archive: malformed tar extended header at byte {at}")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records
