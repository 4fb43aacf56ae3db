"""Starting shims: forked from one zygote process the runtime keeps (see shim/zygote.py).

The zygote is started on the first task and stopped with the service; if it
dies, the next task starts another. Requests are one at a time: a fork of the
zygote takes about a millisecond, and its reply tells that the shim daemonized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from shared.errors import Unavailable

log = logging.getLogger(__name__)

SHIM = str(Path(__file__).with_name("shim"))  # a directory: python runs its __main__
REPLY_TIMEOUT = 30.0


class ShimStarter:
    def __init__(self, runtime_dir: Path) -> None:
        self._runtime_dir = runtime_dir
        self._zygote: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self, task_dir: Path) -> None:
        """Start the shim of ``task_dir`` (its shim.json written); returns once it
        has daemonized. Its socket appears when it is listening."""
        async with self._lock:
            zygote = await self._running()
            assert zygote.stdin is not None
            assert zygote.stdout is not None
            try:
                zygote.stdin.write(f"{task_dir}\n".encode())
                await zygote.stdin.drain()
                line = await asyncio.wait_for(zygote.stdout.readline(), REPLY_TIMEOUT)
            except (OSError, TimeoutError) as e:
                await self._stop()
                raise Unavailable(
                    f"the shim zygote failed ({e}); it restarts with the next task"
                ) from e
            if not line:
                await self._stop()
                raise Unavailable("the shim zygote went away; it restarts with the next task")
        reply = line.decode(errors="replace").strip()
        if reply != "ok":
            raise Unavailable(f"the shim for {task_dir} did not start ({reply}); see its shim.log")

    async def _running(self) -> asyncio.subprocess.Process:
        if self._zygote is not None and self._zygote.returncode is None:
            return self._zygote
        self._zygote = await asyncio.create_subprocess_exec(
            sys.executable, "-S", "-I", SHIM, "--zygote", str(self._runtime_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        log.info("shim zygote started (pid %d)", self._zygote.pid)
        return self._zygote

    async def _stop(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is None or zygote.returncode is not None:
            return
        if zygote.stdin is not None:
            zygote.stdin.close()  # EOF: the zygote's signal to go
        try:
            await asyncio.wait_for(zygote.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                zygote.kill()
            await zygote.wait()

    async def close(self) -> None:
        async with self._lock:
            await self._stop()
