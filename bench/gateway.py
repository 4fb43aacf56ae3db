"""What the gateway hop costs: a unary call and streams, direct vs through the client socket.

    .venv/bin/python -m bench.gateway [--calls 3000] [--megabytes 256]

Starts a berth suite on temp dirs, then, alternating direct and gateway runs:

* the latency of ``Version.Version`` (p50/p99) against the gateway process's
  own socket and through nginx on the client socket;
* upload throughput of Content.Write with 64 KiB and 1 MiB chunks, lock-step
  as containerd's client writes, and download throughput of Content.Read.

Targets (issue 2): at most 0.2 ms added at p50, at least 80 % of direct
stream throughput.
"""

from __future__ import annotations

import argparse
import os
import time

import grpc
from google.protobuf import empty_pb2

from bench.common import berth_suite, median, percentile
from shared import config as berth_config
from shared import context
from shared.api.containerd.services.version.v1 import version_pb2_grpc
from shared.proxy.content import ContentProxy
from shared.rpc.sync_client import channel

KIB = 1 << 10
MIB = 1 << 20


def unary_latencies(address: str, calls: int) -> list[float]:
    with grpc.insecure_channel(berth_config.grpc_target(address)) as ch:
        stub = version_pb2_grpc.VersionStub(ch)
        for _ in range(100):  # warm the connection
            stub.Version(empty_pb2.Empty())
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            stub.Version(empty_pb2.Empty())
            samples.append(time.perf_counter() - start)
        return samples


def upload_rate(address: str, data: bytes, chunk: int, ref: str) -> float:
    with context.using(namespace="bench"):
        ch = channel(address)
        store = ContentProxy(ch)
        start = time.perf_counter()
        w = store.writer(ref, total=len(data))
        view = memoryview(data)
        for offset in range(0, len(data), chunk):
            w.write(bytes(view[offset : offset + chunk]))
        info = w.commit(len(data), "")
        w.close()
        elapsed = time.perf_counter() - start
        store.delete(info.digest)
        ch.close()
    return len(data) / elapsed / MIB


def download_rate(address: str, digest: str, size: int) -> float:
    with context.using(namespace="bench"):
        ch = channel(address)
        store = ContentProxy(ch)
        start = time.perf_counter()
        got = sum(len(chunk) for chunk in store.read(digest))
        elapsed = time.perf_counter() - start
        ch.close()
    assert got == size
    return size / elapsed / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with berth_suite() as suite:
        cfg = berth_config.load(suite.config_path, environ={})
        gateway_direct = cfg.services["gateway"].address
        content_direct = cfg.services["content"].address
        via = suite.address

        direct_lat: list[float] = []
        via_lat: list[float] = []
        for _ in range(args.rounds):
            direct_lat += unary_latencies(gateway_direct, args.calls // args.rounds)
            via_lat += unary_latencies(via, args.calls // args.rounds)
        p50_d, p50_v = median(direct_lat) * 1e3, median(via_lat) * 1e3
        p99_d, p99_v = percentile(direct_lat, 99) * 1e3, percentile(via_lat, 99) * 1e3
        print(f"unary Version, {len(direct_lat)} calls each (ms)")
        print(f"  direct   p50 {p50_d:.3f}  p99 {p99_d:.3f}")
        print(f"  gateway  p50 {p50_v:.3f}  p99 {p99_v:.3f}")
        print(f"  added    p50 {p50_v - p50_d:+.3f}  p99 {p99_v - p99_d:+.3f}"
              f"   (target: p50 added <= 0.200)")  # fmt: skip

        data = os.urandom(args.megabytes * MIB)
        print(f"\nstreams, {args.megabytes} MiB, median of {args.rounds} (MiB/s)")
        for chunk in (64 * KIB, MIB):
            rates: dict[str, list[float]] = {"direct": [], "gateway": []}
            for i in range(args.rounds):
                rates["direct"].append(upload_rate(content_direct, data, chunk, f"d-{chunk}-{i}"))
                rates["gateway"].append(upload_rate(via, data, chunk, f"g-{chunk}-{i}"))
            d, g = median(rates["direct"]), median(rates["gateway"])
            label = f"{chunk // KIB} KiB" if chunk < MIB else "1 MiB"
            print(f"  Write {label:>7}: direct {d:7.1f}  gateway {g:7.1f}  ratio {g / d:5.1%}")

        with context.using(namespace="bench"):
            store = ContentProxy(channel(content_direct))
            w = store.writer("read-source", total=len(data))
            for offset in range(0, len(data), MIB):
                w.write(data[offset : offset + MIB])
            digest = w.commit(len(data), "").digest
            w.close()
        reads: dict[str, list[float]] = {"direct": [], "gateway": []}
        for _ in range(args.rounds):
            reads["direct"].append(download_rate(content_direct, digest, len(data)))
            reads["gateway"].append(download_rate(via, digest, len(data)))
        d, g = median(reads["direct"]), median(reads["gateway"])
        print(f"  Read    1 MiB: direct {d:7.1f}  gateway {g:7.1f}  ratio {g / d:5.1%}"
              "   (target: >= 80%)")  # fmt: skip


if __name__ == "__main__":
    main()
