"""SPDY/3 framing pieces that need no peer: the dictionary and header blocks."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from services.cri import spdy


def test_the_dictionary_is_the_protocols() -> None:
    # SPDY/3 names its header dictionary by its Adler-32, which peers check.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_header_blocks_round_trip_across_a_session() -> None:
    async def check() -> None:
        ours = spdy.Session(asyncio.StreamReader(), _NoWriter())  # type: ignore[arg-type]
        theirs = spdy.Session(asyncio.StreamReader(), _NoWriter())  # type: ignore[arg-type]
        # Two blocks in a row: the zlib stream carries on from one to the next.
        for headers in ({"streamType": "stdout", "port": "80"}, {"streamtype": "error"}):
            block = ours._encode_headers(headers)
            assert theirs._decode_headers(block) == {k.lower(): v for k, v in headers.items()}

    asyncio.run(check())  # a stream reader belongs to a loop


class _NoWriter:
    def write(self, data: Any) -> None:
        raise AssertionError("nothing is sent here")
