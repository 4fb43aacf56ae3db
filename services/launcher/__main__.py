"""``berthd``: run the whole berth suite on this host (see services.launcher.app)."""

from __future__ import annotations

import argparse
import asyncio

from services.launcher.app import Launcher
from shared import config as berth_config
from shared import logs
from shared.errors import InvalidArgument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="berthd", description="Run the berth suite: every service, the bus and the gateway."
    )
    parser.add_argument("--config", help="berth config file (containerd-shaped TOML)")
    parser.add_argument("--root", help=f"persistent state (default {berth_config.DEFAULT_ROOT})")
    parser.add_argument("--state", help=f"runtime state (default {berth_config.DEFAULT_STATE})")
    parser.add_argument("--address", help="client socket (default <state>/berth.sock)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default SQLite under the root)")
    parser.add_argument("--nats-url", help="use this NATS server instead of a private one")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    args = parser.parse_args(argv)
    try:
        config = berth_config.load(
            args.config,
            overrides={
                "root": args.root,
                "state": args.state,
                "grpc.address": args.address,
                "database.url": args.database_url,
                "events.nats_url": args.nats_url,
                "debug.level": args.log_level,
            },
        )
    except InvalidArgument as e:
        parser.error(str(e))
    logs.setup("berthd", level=config.log_level, fmt=config.log_format)
    return asyncio.run(Launcher(config).run())


if __name__ == "__main__":
    raise SystemExit(main())
