"""Unpacking the ``big`` test image: berth's Diff.Apply vs GNU tar vs Debian containerd.

    .venv/bin/python -m bench.unpack [--rounds 3] [--dir /var/tmp | --dir /dev/shm]

* berth: the 5 layers are ingested into the content service (not timed), then
  unpacked into overlayfs snapshots through the gateway (prepare, Diff.Apply,
  commit per layer; timed), as an image pull's unpack does;
* GNU ``tar -xzf`` of the same 5 layers into one directory per layer;
* Debian containerd 1.6: ``ctr image pull --plain-http`` from a local registry,
  reading the unpack time ctr prints (``done: …``).

All three write under ``--dir`` (ext4 by default; ``/dev/shm`` isolates CPU
cost from this VM's erratic file-creation latency, see the baseline notes).
Rounds alternate between the three.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import CTR, containerd, median
from shared import context
from shared.diff import Descriptor
from shared.proxy.content import ContentProxy
from shared.proxy.diff import DiffProxy
from shared.proxy.snapshots import SnapshotterProxy
from shared.rpc.sync_client import channel
from shared.unpack import Layer, apply_layers, chain_ids
from tests.conformance.content import put
from tests.harness import Suite
from tests.testimages import Images, Registry, build


def berth_unpack(suite: Suite, images: Images, round_: int) -> float:
    with context.using(namespace=f"bench-{round_}"):
        ch = channel(suite.address)
        store = ContentProxy(ch)
        layers = []
        for image_layer in images.layers("big"):
            put(store, image_layer.path.read_bytes())
            blob = Descriptor(image_layer.media_type, image_layer.digest, image_layer.size)
            layers.append(Layer(blob, image_layer.diff_id))
        sn = SnapshotterProxy(ch, "overlayfs")
        start = time.perf_counter()
        apply_layers(sn, DiffProxy(ch), layers)
        elapsed = time.perf_counter() - start
        for chain in reversed(chain_ids([layer.diff_id for layer in layers])):
            sn.remove(chain)
        for layer in layers:
            store.delete(layer.blob.digest)
        ch.close()
    return elapsed


def tar_unpack(images: Images, scratch: Path) -> float:
    target = Path(tempfile.mkdtemp(prefix="tar-", dir=scratch))
    start = time.perf_counter()
    for i, lay in enumerate(images.layers("big")):
        layer_dir = target / str(i)
        layer_dir.mkdir()
        subprocess.run(["tar", "-xzf", str(lay.path), "-C", str(layer_dir)], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return elapsed


def containerd_unpack(address: str, ref: str) -> float:
    out = subprocess.run(
        [CTR, "--address", address, "image", "pull", "--plain-http", ref],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    subprocess.run([CTR, "--address", address, "image", "rm", "--sync", ref], check=True,
                   capture_output=True)  # fmt: skip
    match = re.search(r"done: ([0-9.]+)(ms|s)", out)
    if match is None:
        raise RuntimeError(f"no unpack time in ctr's output:\n{out}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp", help="filesystem to unpack onto")
    args = parser.parse_args()
    scratch = Path(args.dir)
    images = build(no_big=False)

    times: dict[str, list[float]] = {"berth": [], "tar": [], "containerd": []}
    suite = Suite(root=Path(tempfile.mkdtemp(prefix="bench-berth-", dir=scratch))).start()
    try:
        with Registry(images) as registry, containerd(scratch) as address:
            for i in range(args.rounds):
                times["berth"].append(berth_unpack(suite, images, i))
                times["tar"].append(tar_unpack(images, scratch))
                times["containerd"].append(containerd_unpack(address, registry.ref("big")))
    finally:
        suite.stop()
        suite.cleanup()

    b, t, c = (median(times[k]) for k in ("berth", "tar", "containerd"))
    print(f"big image (5 layers, 83 MB gzip, 20.6k entries) onto {scratch}")
    print(f"median of {args.rounds} rounds (seconds)")
    print(f"  berth Diff.Apply (overlayfs) {b:7.2f}")
    print(f"  GNU tar -xzf                 {t:7.2f}   berth/tar        {b / t:5.2f}")
    print(f"  Debian containerd unpack     {c:7.2f}   berth/containerd {b / c:5.2f}")


if __name__ == "__main__":
    main()
