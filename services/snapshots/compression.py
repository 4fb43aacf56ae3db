"""Layer media types and streaming decompression (containerd's archive/compression).

A layer blob reaches the snapshots service as a stream of chunks from the
content store. ``open_layer`` turns it into a file-like reader of the
uncompressed tar, computing the diff ID (sha256 of the uncompressed bytes)
as the bytes go by. Nothing is held in memory beyond one chunk and nothing
is written to disk: a layer is read once, while it is applied.

Which media types decompress how follows containerd's ``images.DiffCompression``
plus ``compression.DecompressStream``:

* the OCI ``...layer.v1.tar`` and ``...layer.nondistributable.v1.tar`` are
  plain tar, read as is;
* their ``+gzip`` / ``+zstd`` variants and both Docker rootfs types (``.tar``
  and ``.tar.gzip``, also "foreign") are *sniffed*: gzip or zstd magic selects
  the decompressor, anything else is read as plain tar. containerd does this
  because images exist whose media type says gzip while the data is not;
* anything else is ``Unimplemented`` (containerd: ErrNotImplemented).

Hostile input: a decompression bomb cannot make a single ``read`` return more
than the size asked for (zlib's ``max_length``; zstd's bounded stream reader),
and a stream that ends in the middle of a gzip member or zstd frame is an
``InvalidArgument`` ("truncated"), never a silently short layer.
"""

from __future__ import annotations

import enum
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, cast

import zstandard

from shared.content import CHUNK_SIZE
from shared.errors import InvalidArgument, Unimplemented

__all__ = ["Compression", "LayerReader", "decompressor_for", "open_layer"]

_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# zlib returns at most this much per call, and is fed input this big at a
# time, so that a bomb (1000:1) costs bounded memory and small tail copies.
_ZLIB_INPUT = 256 << 10


class Compression(enum.Enum):
    NONE = "none"  # plain tar, not sniffed
    DETECT = "detect"  # gzip, zstd or plain, by magic bytes
    GZIP = "gzip"  # detected
    ZSTD = "zstd"  # detected


_OCI_LAYER = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
)
_DOCKER_LAYER = (
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)


def decompressor_for(media_type: str) -> Compression:
    """How a layer of ``media_type`` is decompressed; Unimplemented if it is not a layer type."""
    base, *ext = media_type.strip().split("+")
    if base in _OCI_LAYER:
        if not ext:
            return Compression.NONE
        if ext in (["gzip"], ["zstd"]):
            return Compression.DETECT
    elif base in _DOCKER_LAYER and not ext:
        return Compression.DETECT
    raise Unimplemented(f"unsupported layer media type {media_type!r}")


class _Source:
    """Pieces of a blob from an iterator of chunks or a binary file, bounded in size.

    Pieces are cut from the current chunk by offset, so a source that hands
    over one huge chunk costs no quadratic copying.
    """

    def __init__(self, source: Iterable[bytes] | BinaryIO) -> None:
        if hasattr(source, "read"):
            self._it: Iterator[bytes] = iter(lambda: source.read(CHUNK_SIZE), b"")
        else:
            self._it = iter(source)
        self._chunk = b""
        self._off = 0
        self.eof = False

    def _load(self) -> bool:
        while self._off >= len(self._chunk):
            if self.eof:
                return False
            for chunk in self._it:
                if chunk:
                    self._chunk, self._off = bytes(chunk), 0
                    break
            else:
                self.eof = True
                self._chunk, self._off = b"", 0
                return False
        return True

    def next_chunk(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of what comes next; b"" at the end."""
        if not self._load():
            return b""
        chunk, off = self._chunk, self._off
        if off == 0 and len(chunk) <= limit:
            self._off = len(chunk)
            return chunk
        end = min(off + limit, len(chunk))
        self._off = end
        return chunk[off:end]

    def unread(self, data: bytes) -> None:
        """Put bytes back in front (look-ahead, and what follows a gzip member)."""
        if data:
            self._chunk, self._off = data + self._chunk[self._off :], 0

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only at the end), without consuming them."""
        head = b""
        while len(head) < n:
            piece = self.next_chunk(n - len(head))
            if not piece:
                break
            head += piece
        self.unread(head)
        return head


class _Plain:
    def __init__(self, src: _Source) -> None:
        self._src = src

    def read(self, n: int) -> bytes:
        return self._src.next_chunk(n)


class _Gzip:
    """Concatenated gzip members, as Go's gzip.Reader in multistream mode reads them."""

    def __init__(self, src: _Source, label: str) -> None:
        self._src = src
        self._label = label
        self._d: zlib._Decompress | None = None
        self._started = False

    def read(self, n: int) -> bytes:
        while True:
            if self._d is None:
                head = self._src.peek(3)
                if not head:
                    return b""  # clean end between members
                if head != _GZIP_MAGIC:
                    what = "trailing data after gzip stream" if self._started else "not gzip"
                    raise InvalidArgument(f"{self._label}: {what}")
                self._d = zlib.decompressobj(31)
                self._started = True
            d = self._d
            data = d.unconsumed_tail or self._src.next_chunk(_ZLIB_INPUT)
            if not data:
                raise InvalidArgument(f"{self._label}: truncated gzip stream")
            try:
                out = d.decompress(data, n)
            except zlib.error as e:
                raise InvalidArgument(f"{self._label}: corrupt gzip stream: {e}") from e
            if d.eof:
                self._src.unread(d.unused_data)
                self._d = None
            if out:
                return out


class _ZstdFrames:
    """Tracks zstd frame boundaries in the compressed bytes (RFC 8878, sections 3.1-3.1.1.2).

    zstandard's bounded stream reader reports a stream cut inside a frame as a
    clean end; walking the frame and block headers as the bytes pass tells
    whether the input stopped exactly between frames.
    """

    def __init__(self) -> None:
        self._hdr = b""  # partial header being collected
        self._need = 4  # bytes of header wanted
        self._state = "magic"
        self._skip = 0  # payload bytes to pass over
        self._checksum = False

    def feed(self, data: bytes) -> None:
        i, end = 0, len(data)
        while i < end:
            if self._skip:
                step = min(self._skip, end - i)
                self._skip -= step
                i += step
                continue
            take = min(self._need - len(self._hdr), end - i)
            self._hdr += data[i : i + take]
            i += take
            if len(self._hdr) == self._need:
                self._advance()

    def _advance(self) -> None:
        h, state = self._hdr, self._state
        self._hdr = b""
        if state == "magic":
            magic = int.from_bytes(h, "little")
            if h == _ZSTD_MAGIC:
                self._state, self._need = "fhd", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skippable", 4
            else:
                raise ValueError("unknown frame descriptor")
        elif state == "skippable":
            self._skip = int.from_bytes(h, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            fhd = h[0]
            single = (fhd >> 5) & 1
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            self._checksum = bool((fhd >> 2) & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
            self._skip, self._state, self._need = rest, "block", 3
        elif state == "block":
            v = int.from_bytes(h, "little")
            last, kind, size = v & 1, (v >> 1) & 3, v >> 3
            if kind == 3:
                raise ValueError("reserved block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4

    @property
    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._hdr and not self._skip


class _Zstd:
    def __init__(self, src: _Source, label: str) -> None:
        self._src = src
        self._label = label
        self._frames = _ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, self), read_size=CHUNK_SIZE, read_across_frames=True, closefd=False
        )

    # The zstandard reader pulls compressed input through this method.
    def read(self, n: int = -1) -> bytes:
        data = self._src.next_chunk(n if n >= 0 else CHUNK_SIZE)
        try:
            self._frames.feed(data)
        except ValueError as e:
            raise InvalidArgument(f"{self._label}: corrupt zstd stream: {e}") from e
        return data

    def decompress(self, n: int) -> bytes:
        try:
            out: bytes = self._reader.read(n)
        except zstandard.ZstdError as e:
            raise InvalidArgument(f"{self._label}: corrupt zstd stream: {e}") from e
        if not out and not self._frames.at_boundary:
            raise InvalidArgument(f"{self._label}: truncated zstd stream")
        return out


class LayerReader:
    """The uncompressed tar of a layer, as a read-only binary stream.

    ``diff_id`` and ``size`` cover the bytes returned so far; call ``drain``
    after the tar's end marker so trailing bytes count too (containerd hashes
    the whole stream, not just up to the end-of-archive blocks).
    """

    def __init__(
        self,
        source: Iterable[bytes] | BinaryIO,
        compression: Compression,
        label: str,
    ) -> None:
        src = _Source(source)
        if compression is Compression.DETECT:
            head = src.peek(8)
            if head.startswith(_GZIP_MAGIC):
                compression = Compression.GZIP
            elif head.startswith(_ZSTD_MAGIC) or (
                len(head) == 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50
            ):
                compression = Compression.ZSTD
            else:
                compression = Compression.NONE
        self.compression = compression
        self.label = f"layer {label}" if label else "layer"
        label = self.label
        read: Callable[[int], bytes]
        if compression is Compression.GZIP:
            read = _Gzip(src, label).read
        elif compression is Compression.ZSTD:
            read = _Zstd(src, label).decompress
        else:
            read = _Plain(src).read
        self._read = read
        self._hash = hashlib.sha256()
        self.size = 0
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (a chunk when ``n`` < 0); b"" only at the end."""
        if self._eof or n == 0:
            return b""
        data = self._read(n if n > 0 else CHUNK_SIZE)
        if not data:
            self._eof = True
            return b""
        self._hash.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass

    @property
    def diff_id(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def open_layer(
    source: Iterable[bytes] | BinaryIO,
    media_type: str,
    *,
    label: str = "",
) -> LayerReader:
    """A reader of the uncompressed tar of a layer blob; ``label`` (its digest) names it in errors.

    Errors read "layer sha256:ab..: truncated gzip stream".
    """
    return LayerReader(source, decompressor_for(media_type), label)
