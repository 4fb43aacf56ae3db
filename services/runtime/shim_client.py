"""Talking to a task's shim over its control socket (see services/runtime/shim/)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from shared import errors

_ERRORS: dict[str, type[errors.BerthError]] = {
    "NotFound": errors.NotFound,
    "AlreadyExists": errors.AlreadyExists,
    "FailedPrecondition": errors.FailedPrecondition,
    "InvalidArgument": errors.InvalidArgument,
}


class ShimClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    async def call(self, op: str, timeout: float | None = 120.0, **args: Any) -> dict[str, Any]:
        """One request; the shim's error becomes the matching berth error."""
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 22)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise errors.Unavailable(f"the task's shim is gone ({self.socket_path}): {e}") from e
        try:
            writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise errors.DeadlineExceeded(f"shim did not answer {op} in {timeout}s") from None
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()
        if not line:
            raise errors.Unavailable(f"the task's shim closed the connection during {op}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok", False):
            cls = _ERRORS.get(reply.get("code", ""), errors.BerthError)
            raise cls(reply.get("error", f"{op} failed"))
        return reply

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The shim's events (exits, starts ...) until it goes away."""
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 22)
        try:
            writer.write(b'{"op": "subscribe"}\n')
            await writer.drain()
            while line := await reader.readline():
                event = json.loads(line)
                if "type" in event:
                    yield event
        finally:
            writer.close()
