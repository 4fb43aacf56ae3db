"""What the benchmarks share: a berth suite and a Debian containerd on temp dirs, timing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.harness import Suite, wait_until

CTR = shutil.which("ctr") or "/usr/bin/ctr"
CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"


@contextlib.contextmanager
def berth_suite() -> Iterator[Suite]:
    suite = Suite().start()
    try:
        yield suite
    finally:
        suite.stop()
        suite.cleanup()


@contextlib.contextmanager
def containerd(root_dir: Path | None = None, cri_plugin: str = "") -> Iterator[str]:
    """Debian's containerd on private dirs; yields its socket address. Its CRI plugin is
    off unless ``cri_plugin`` gives that plugin's configuration (TOML tables)."""
    base = Path(tempfile.mkdtemp(prefix="bench-containerd-", dir=str(root_dir or "/tmp")))
    address = str(base / "containerd.sock")
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{base / "root"}"\nstate = "{base / "state"}"\n'
        + ("" if cri_plugin else 'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
        + f'[grpc]\naddress = "{address}"\n'
        f'[ttrpc]\naddress = "{address}.ttrpc"\n'
        '[debug]\nlevel = "warn"\n' + cri_plugin
    )
    log = open(base / "containerd.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [CONTAINERD, "--config", str(config)], stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    [CTR, "--address", address, "version"], capture_output=True
                ).returncode
                == 0
            ),
            30,
            what="containerd to answer",
        )
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))
    return ordered[index]


def ctr(address: str, *args: str, stdin: int | None = None, stdout: int | None = None) -> None:
    subprocess.run([CTR, "--address", address, *args], check=True, stdin=stdin,
                   stdout=stdout if stdout is not None else subprocess.DEVNULL)  # fmt: skip


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        remaining = size
        while remaining > 0:
            chunk = os.urandom(min(1 << 24, remaining))
            f.write(chunk)
            remaining -= len(chunk)
