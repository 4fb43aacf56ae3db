"""Cold pull + unpack of the ``big`` test image: berth vs Debian containerd, same registry.

    .venv/bin/python -m bench.pull [--rounds 5] [--dir /var/tmp]

Both servers run on temp dirs under ``--dir`` and pull from one local
``docker-registry`` (the blobs in the page cache). berth pulls server side
through the Transfer service (fetch, unpack into overlayfs, record);
containerd's ``ctr image pull --plain-http`` does the same through its
client. Before every run the image is removed and garbage collected, so each
pull is cold. Runs alternate between the two.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import CTR, containerd, median
from shared import context
from shared.api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from shared.proxy.transfer import TransferClient
from shared.rpc.sync_client import channel
from tests.harness import Suite
from tests.testimages import Registry, build


def berth_pull(address: str, ref: str) -> float:
    with context.using(namespace="bench"):
        ch = channel(address)
        start = time.perf_counter()
        TransferClient(ch).pull(ref)
        elapsed = time.perf_counter() - start
        images_pb2_grpc.ImagesStub(ch).Delete(images_pb2.DeleteImageRequest(name=ref, sync=True))
        ch.close()
    return elapsed


def containerd_pull(address: str, ref: str) -> float:
    start = time.perf_counter()
    subprocess.run([CTR, "--address", address, "image", "pull", "--plain-http", ref],
                   check=True, capture_output=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    subprocess.run([CTR, "--address", address, "image", "rm", "--sync", ref], check=True,
                   capture_output=True)  # fmt: skip
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default="/var/tmp", help="filesystem for both roots")
    args = parser.parse_args()
    scratch = Path(args.dir)
    images = build(no_big=False)
    times: dict[str, list[float]] = {"berth": [], "containerd": []}
    suite = Suite(root=Path(tempfile.mkdtemp(prefix="bench-berth-", dir=scratch))).start()
    try:
        with Registry(images) as registry, containerd(scratch) as address:
            ref = registry.ref("big")
            for _ in range(args.rounds):
                times["berth"].append(berth_pull(suite.address, ref))
                times["containerd"].append(containerd_pull(address, ref))
    finally:
        suite.stop()
        suite.cleanup()
    b, c = median(times["berth"]), median(times["containerd"])
    print(f"cold pull + unpack of big (83 MB gzip, 5 layers) onto {scratch}")
    print(f"median of {args.rounds} rounds (seconds)")
    runs = {k: " ".join(f"{t:.2f}" for t in v) for k, v in times.items()}
    print(f"  berth (Transfer, server side) {b:7.2f}   runs: {runs['berth']}")
    print(f"  containerd (ctr pull)         {c:7.2f}   runs: {runs['containerd']}")
    print(f"  berth / containerd            {b / c:7.2f}")


if __name__ == "__main__":
    main()
