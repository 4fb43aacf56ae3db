"""The server side of SPDY/3.1 as kubelet and kubectl speak it (moby's spdystream).

Just what remote command streaming needs: the peer opens streams (SYN_STREAM, whose
headers say what each is for), we accept each (SYN_REPLY), both sides send DATA and
half-close with FIN, PINGs are echoed, RST_STREAM and GOAWAY end things. Header
blocks are zlib streams primed with the protocol's dictionary, one per direction for
the whole session. spdystream does no flow control, so neither side sends
WINDOW_UPDATE; frames that need no answer (SETTINGS, WINDOW_UPDATE) are read and
dropped, header blocks always inflated so the shared zlib state stays in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
FLAG_FIN = 0x01
MAX_FRAME = 1 << 24  # lengths are 24 bits
DATA_CHUNK = 32 * 1024
MAX_HEADER_BLOCK = 1 << 20

# The SPDY/3 header compression dictionary, as the protocol defines it: common header
# names and values as length-prefixed strings, then a run of status codes, reason
# phrases, dates and media types.
_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)  # fmt: skip
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
    "charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS)
    + _DICTIONARY_TAIL.encode()
)


class ProtocolError(Exception):
    """The peer broke the framing; the session ends."""


@dataclass
class Stream:
    """One stream the peer opened: its headers, and what it sent us, in order."""

    id: int
    headers: dict[str, str]
    session: Session
    inbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)  # b"" = the end
    closed_by_us: bool = False
    ended_by_peer: bool = False

    async def read(self) -> bytes:
        """The next bytes from the peer; b"" once it half-closed (or reset) the stream."""
        if self.ended_by_peer and self.inbox.empty():
            return b""
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        for start in range(0, len(data), DATA_CHUNK):
            await self.session.send_data(self.id, data[start : start + DATA_CHUNK])

    async def close(self) -> None:
        if not self.closed_by_us:
            self.closed_by_us = True
            await self.session.send_data(self.id, b"", fin=True)

    def _end(self) -> None:
        if not self.ended_by_peer:
            self.ended_by_peer = True
            self.inbox.put_nowait(b"")


class Session:
    """A SPDY session on an upgraded connection, serving streams the peer opens."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                         DICTIONARY)  # fmt: skip
        self._send_lock = asyncio.Lock()
        self.streams: dict[int, Stream] = {}
        self.opened: asyncio.Queue[Stream | None] = asyncio.Queue()  # None: session over
        self.closed = False

    # -- reading -----------------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the peer goes away; streams arrive on :attr:`opened`."""
        try:
            while True:
                header = await self._reader.readexactly(8)
                length = int.from_bytes(header[5:8], "big")
                payload = await self._reader.readexactly(length) if length else b""
                flags = header[4]
                if header[0] & 0x80:
                    version, kind = struct.unpack(">HH", header[:4])
                    if version & 0x7FFF != VERSION:
                        raise ProtocolError(f"SPDY version {version & 0x7FFF}, not 3")
                    if not await self._control(kind, flags, payload):
                        return
                else:
                    self._data(struct.unpack(">I", header[:4])[0] & 0x7FFFFFFF, flags, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.closed = True
            for stream in self.streams.values():
                stream._end()
            self.opened.put_nowait(None)

    async def _control(self, kind: int, flags: int, payload: bytes) -> bool:
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream_id = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            headers = self._decode_headers(payload[10:])
            stream = Stream(stream_id, headers, self)
            self.streams[stream_id] = stream
            await self._send_control(SYN_REPLY, 0, struct.pack(">I", stream_id)
                                     + self._encode_headers({}))  # fmt: skip
            if flags & FLAG_FIN:
                stream._end()
            self.opened.put_nowait(stream)
        elif kind in (SYN_REPLY, HEADERS):
            self._decode_headers(payload[4:])  # keeps the zlib stream in step
        elif kind == RST_STREAM:
            stream_id = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if stream_id in self.streams:
                self.streams[stream_id]._end()
        elif kind == PING:
            await self._send_control(PING, 0, payload)
        elif kind == GOAWAY:
            return False
        return True  # SETTINGS, WINDOW_UPDATE and anything newer: nothing to answer

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended_by_peer:
            return
        if payload:
            stream.inbox.put_nowait(payload)
        if flags & FLAG_FIN:
            stream._end()

    def _decode_headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        if self._inflate.unconsumed_tail:
            raise ProtocolError("header block too large")
        if len(raw) < 4:
            raise ProtocolError("empty header block")
        (count,) = struct.unpack(">I", raw[:4])
        offset, headers = 4, {}
        for _ in range(count):
            name, offset = _string(raw, offset)
            value, offset = _string(raw, offset)
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        return headers

    # -- writing -----------------------------------------------------------------

    def _encode_headers(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            for part in (name.lower().encode(), value.encode()):
                raw += struct.pack(">I", len(part)) + part
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def _send_control(self, kind: int, flags: int, payload: bytes) -> None:
        header = struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload))
        await self._send(header + payload)

    async def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        flags = FLAG_FIN if fin else 0
        await self._send(struct.pack(">II", stream_id, (flags << 24) | len(data)) + data)

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            if self._writer.is_closing():
                raise ConnectionResetError("the SPDY peer went away")
            self._writer.write(frame)
            await self._writer.drain()

    async def go_away(self) -> None:
        with contextlib.suppress(ConnectionError):
            last = max(self.streams, default=0)
            await self._send_control(GOAWAY, 0, struct.pack(">II", last, 0))
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


def _string(raw: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(raw):
        raise ProtocolError("truncated header block")
    (length,) = struct.unpack(">I", raw[offset : offset + 4])
    end = offset + 4 + length
    if end > len(raw):
        raise ProtocolError("truncated header block")
    return raw[offset + 4 : end], end
