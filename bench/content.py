"""Content store throughput: 1 GiB through berth's gateway vs Debian containerd, same ctr.

    .venv/bin/python -m bench.content [--megabytes 1024] [--rounds 3]

Both servers are started by the benchmark on temp dirs of the same
filesystem, and driven by the same client (Debian's ``ctr``): ``ctr content
ingest`` (upload, server hashes and verifies) and ``ctr content get`` (read
back), alternating berth and containerd each round. ``sha256sum`` of the same
file is the floor for anything that must hash every byte.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
from pathlib import Path

from bench.common import berth_suite, containerd, ctr, median, random_file, timed

MIB = 1 << 20


def ingest(address: str, path: Path, ref: str) -> float:
    with open(path, "rb") as f:
        return timed(lambda: ctr(address, "content", "ingest", ref, stdin=f.fileno()))


def get(address: str, digest: str) -> float:
    with open("/dev/null", "wb") as sink:
        return timed(lambda: ctr(address, "content", "get", digest, stdout=sink.fileno()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size: int = args.megabytes * MIB

    with tempfile.TemporaryDirectory(prefix="bench-content-", dir="/var/tmp") as tmp:
        blob = Path(tmp) / "blob"
        random_file(blob, size)
        h = hashlib.sha256()
        with open(blob, "rb") as f:
            while chunk := f.read(MIB):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()

        def sha256sum() -> None:
            subprocess.run(["sha256sum", str(blob)], check=True, capture_output=True)

        sha = [timed(sha256sum) for _ in range(args.rounds)]

        results: dict[str, dict[str, list[float]]] = {
            "berth": {"ingest": [], "get": []},
            "containerd": {"ingest": [], "get": []},
        }
        with berth_suite() as suite, containerd() as containerd_address:
            servers = {"berth": suite.address, "containerd": containerd_address}
            for i in range(args.rounds):
                for name, address in servers.items():
                    results[name]["ingest"].append(ingest(address, blob, f"bench-{i}"))
                    results[name]["get"].append(get(address, digest))
                    ctr(address, "content", "rm", digest)

    def rate(seconds: float) -> float:
        return size / seconds / MIB

    sha_rate = rate(median(sha))
    print(f"{args.megabytes} MiB, median of {args.rounds} rounds (MiB/s; ctr as the client)")
    print(f"  sha256sum                {sha_rate:8.1f}")
    for op in ("ingest", "get"):
        b = rate(median(results["berth"][op]))
        c = rate(median(results["containerd"][op]))
        print(f"  ctr content {op:<7} berth {b:8.1f}  containerd {c:8.1f}  "
              f"berth/containerd {b / c:5.2f}  berth/sha256sum {b / sha_rate:5.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
