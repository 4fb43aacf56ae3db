"""``berthd``: run the whole berth suite on this host (see services.launcher.app)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

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
    parser.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run in the background; return once every service answers (log: <state>/berthd.log)",
    )
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
    if args.detach:
        foreground = [
            a for a in (sys.argv[1:] if argv is None else argv) if a not in ("-d", "--detach")
        ]
        return detach(foreground, config.state)
    logs.setup("berthd", level=config.log_level, fmt=config.log_format)
    return asyncio.run(Launcher(config).run())


def detach(argv: list[str], state: Path, timeout: float = 120.0) -> int:
    """Starts berthd in a session of its own and waits for its ready line."""
    state.mkdir(parents=True, exist_ok=True)
    out, log = state / "berthd.out", state / "berthd.log"
    out.unlink(missing_ok=True)
    with out.open("wb") as stdout, log.open("ab") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.launcher", *argv],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("{") and '"ready"' in line:
                ready = json.loads(line)
                print(json.dumps({"ready": ready["ready"], "pid": child.pid}), flush=True)
                return 0
        if child.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            print(
                f"berthd exited with {child.returncode}; {log}:", *tail, sep="\n", file=sys.stderr
            )
            return 1
        time.sleep(0.1)
    print(f"berthd (pid {child.pid}) is not ready after {timeout:.0f}s; see {log}", file=sys.stderr)
    os.kill(child.pid, 15)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
