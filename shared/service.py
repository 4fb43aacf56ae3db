"""The life of one berth service process, shared by every ``services/<name>``.

A service's ``__main__`` composes its parts in one ``setup`` coroutine and
hands it to :func:`run`::

    async def setup(svc: ServiceProcess) -> None:
        store = ContentStore(...)                   # core object, no gRPC in it
        svc.add_grpc("containerd.services.content.v1.Content",
                     content_pb2_grpc.add_ContentServicer_to_server, ContentServicer(store))
        svc.plugins += [Plugin(CONTENT, "content"), ...]
        svc.spawn(store.janitor())                  # background loop owned by the process
        svc.on_shutdown(store.close)

    def main() -> int:
        return run("content", setup)

:func:`run` parses ``--config`` and friends, sets up logs and tracing, serves
the gRPC services plus Health and Introspection on the process's socket, and
on SIGTERM/SIGINT stops serving (letting running calls finish), cancels the
background loops and runs the shutdown hooks. A background loop that fails
takes the process down, so that the supervisor restarts it: a service never
runs half-alive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from shared import config as berth_config
from shared import logs, telemetry
from shared.api.containerd.services.introspection.v1 import introspection_pb2_grpc
from shared.errors import BerthError
from shared.plugins import Plugin
from shared.rpc.introspection import IntrospectionServicer
from shared.rpc.server import RpcServer

log = logging.getLogger(__name__)

INTROSPECTION = "containerd.services.introspection.v1.Introspection"


class _Stop(Exception):
    pass


class ServiceProcess:
    """What a service's ``setup`` gets: its config, its server, and owners for its loops."""

    def __init__(
        self, name: str, config: berth_config.Config, task_group: asyncio.TaskGroup
    ) -> None:
        self.name = name
        self.config = config
        self.endpoint = config.endpoint(name)
        self.server = RpcServer(
            max_recv_message_size=config.max_recv_message_size,
            max_send_message_size=config.max_send_message_size,
        )
        self.plugins: list[Plugin] = []
        self._task_group = task_group
        self._shutdown_hooks: list[Callable[[], Awaitable[None] | None]] = []
        self.serve_introspection = True

    def add_grpc(
        self, service_name: str, register: Callable[[Any, Any], None], servicer: Any
    ) -> None:
        self.server.add(service_name, register, servicer)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        """Run a background loop for the life of the process."""
        self._task_group.create_task(coro, name=name)

    def on_shutdown(self, hook: Callable[[], Awaitable[None] | None]) -> None:
        """Run ``hook`` at shutdown, after the server stopped (last registered runs first)."""
        self._shutdown_hooks.append(hook)

    async def _run_shutdown_hooks(self) -> None:
        for hook in reversed(self._shutdown_hooks):
            try:
                result = hook()
                if result is not None:
                    await result
            except Exception:
                log.exception("shutdown hook %r failed", hook)


Setup = Callable[[ServiceProcess], Awaitable[None]]


def parse_args(name: str, argv: list[str] | None) -> berth_config.Config:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--config", help="berth config file (TOML)")
    parser.add_argument("--root", help="persistent state directory")
    parser.add_argument("--state", help="runtime state directory")
    parser.add_argument("--listen", help=f"address to serve on (default from [services.{name}])")
    parser.add_argument("--database-url", help="SQLAlchemy URL")
    parser.add_argument("--nats-url", help="NATS URL of the event bus")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    args = parser.parse_args(argv)
    try:
        return berth_config.load(
            args.config,
            overrides={
                "root": args.root,
                "state": args.state,
                f"services.{name}.listen": args.listen,
                "database.url": args.database_url,
                "events.nats_url": args.nats_url,
                "debug.level": args.log_level,
            },
        )
    except BerthError as e:
        parser.error(str(e))


def run(name: str, setup: Setup, argv: list[str] | None = None) -> int:
    config = parse_args(name, argv)
    logs.setup(name, level=config.log_level, fmt=config.log_format)
    telemetry.setup(name, otlp_endpoint=config.otlp_endpoint, trace_file=config.trace_file)
    try:
        return asyncio.run(serve(name, config, setup))
    finally:
        telemetry.shutdown()


async def serve(name: str, config: berth_config.Config, setup: Setup) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    svc: ServiceProcess | None = None
    failed = False
    try:
        async with asyncio.TaskGroup() as task_group:
            svc = ServiceProcess(name, config, task_group)
            await setup(svc)
            if svc.serve_introspection:
                svc.add_grpc(
                    INTROSPECTION,
                    introspection_pb2_grpc.add_IntrospectionServicer_to_server,
                    IntrospectionServicer(lambda: list(svc.plugins) if svc else [], config.root),
                )
            svc.server.listen(svc.endpoint.bind)
            if svc.endpoint.tcp_address:
                svc.server.listen(svc.endpoint.tcp_address)
            await svc.server.start()
            await stop.wait()
            log.info("shutting down")
            await svc.server.stop(grace=5.0)
            raise _Stop
    except* _Stop:
        pass
    except* Exception:
        log.exception("%s failed", name)
        failed = True
    finally:
        if svc is not None:
            with contextlib.suppress(Exception):
                await svc.server.stop(grace=0)
            await svc._run_shutdown_hooks()
    return 1 if failed else 0
