"""Child processes of berthd: start, health-wait, restart with backoff, stop.

Each child runs in its own session (a terminal's Ctrl-C reaches only berthd,
which then stops children in order) and gets SIGTERM from the kernel if
berthd itself dies (PR_SET_PDEATHSIG), so nothing outlives the launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


HealthCheck = Callable[[], Awaitable[bool]]


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    health: HealthCheck
    env: Mapping[str, str] = field(default_factory=dict)
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    start_timeout: float = 30.0
    on_spawn: Callable[[], None] | None = None


class Child:
    """One supervised process; restarted with exponential backoff when it dies."""

    MIN_BACKOFF = 0.2
    MAX_BACKOFF = 10.0
    STABLE_AFTER = 30.0  # running this long resets the backoff

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._healthy = asyncio.Event()

    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def _spawn(self) -> None:
        env = {**os.environ, **self.spec.env}
        self._healthy.clear()
        self.process = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.info("started %s (pid %d)", self.spec.name, self.process.pid)
        if self.spec.on_spawn is not None:
            self.spec.on_spawn()

    async def wait_healthy(self) -> None:
        """Poll the health check until it passes; raise if the process dies or times out."""
        deadline = time.monotonic() + self.spec.start_timeout
        while True:
            process = self.process
            if process is None or process.returncode is not None:
                raise RuntimeError(f"{self.spec.name} exited while starting")
            with contextlib.suppress(Exception):
                if await self.spec.health():
                    self._healthy.set()
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.spec.name} not healthy after {self.spec.start_timeout}s")
            await asyncio.sleep(0.05)

    async def start(self) -> None:
        await self._spawn()
        await self.wait_healthy()

    async def supervise(self) -> None:
        """Restart the process whenever it exits, until :meth:`stop`."""
        backoff = self.MIN_BACKOFF
        while not self.stopping():
            process = self.process
            assert process is not None
            started = time.monotonic()
            code = await process.wait()
            _reap_group(process.pid)
            if self.stopping():
                return
            if time.monotonic() - started > self.STABLE_AFTER:
                backoff = self.MIN_BACKOFF
            log.warning(
                "%s (pid %d) exited with %s; restarting in %.1fs",
                self.spec.name,
                process.pid,
                _describe(code),
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF)
            if self.stopping():
                return
            self.restarts += 1
            await self._spawn()
            if self.stopping():
                await self._terminate()
                return
            try:
                await self.wait_healthy()
            except (RuntimeError, TimeoutError) as e:
                log.error("%s: %s", self.spec.name, e)
                if self.process and self.process.returncode is None:
                    self.process.kill()

    async def stop(self) -> None:
        self._stopping = True
        await self._terminate()

    async def _terminate(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(self.spec.stop_signal)
        try:
            await asyncio.wait_for(process.wait(), self.spec.stop_timeout)
        except TimeoutError:
            log.warning(
                "%s did not stop in %.0fs; killing it", self.spec.name, self.spec.stop_timeout
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        _reap_group(process.pid)
        log.info("stopped %s", self.spec.name)


def _reap_group(pgid: int) -> None:
    """Kill what the child left in its process group (nginx workers outlive a killed master).

    Processes meant to outlive a restart (task shims) start sessions of their own.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"
