"""Running containers: berth's runtime vs Debian containerd, both driven by Debian's ctr.

    .venv/bin/python -m bench.run [--rounds 20] [--idle 20]

Both servers run on temp dirs started by the benchmark (containerd with its
runc v2 shim and runc; berth with its runtime service and shims), with the
busybox test image pulled from one local registry.

* latency of ``ctr run --rm <busybox> <id> true`` (create, start, wait,
  delete, container removal), rounds alternating between the two;
* memory with ``--idle`` containers running ``sleep`` (``ctr run -d``): RSS
  and PSS (``/proc/<pid>/smaps_rollup``) of containerd and of its shims, and
  of berth's runtime service and its shims (with the zygote they are forked
  from). PSS splits shared pages between the processes that map them, so the
  sums are what the processes really cost together.

Every container is removed through ctr before the servers stop; whatever
survives that (a shim, a container process, a mount) is killed by PID or
unmounted, and the temp dirs go with the servers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.common import CTR, berth_suite, containerd, median, percentile, timed
from tests.harness import Suite, pid_alive, wait_until
from tests.testimages import Registry, build

NS = f"bench-run-{os.getpid()}"  # runc state and cgroups are per namespace: keep ours apart
SHIM_BINARY = "containerd-shim-runc-v2"
KIB = 1024


def ctr(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CTR, "--address", address, "--namespace", NS, *args],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {result.returncode} {result.stderr.strip()}")
    return result


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB."""
    values = {"Rss:": 0, "Pss:": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, value = line.split()[:2]
            if key in values:
                values[key] = int(value)
    return values["Rss:"], values["Pss:"]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def identity(pid: int) -> tuple[int, str]:
    """(pid, start time): a PID alone may name someone else's process later."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid, f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return pid, ""


def processes_with(*needles: str) -> list[int]:
    """Our own processes, told apart by their command lines (our socket, our config)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            args = cmdline(int(entry))
            if args and all(any(n in a for a in args) for n in needles):
                found.append(int(entry))
    return found


def containerd_processes(address: str) -> tuple[int, list[int]]:
    config = str(Path(address).parent / "config.toml")
    (daemon,) = processes_with("containerd", config)
    shims = [p for p in processes_with(SHIM_BINARY, address) if p != daemon]
    return daemon, shims


def berth_processes(suite: Suite) -> tuple[int, list[int], list[int]]:
    """The runtime service, its shims, and the zygote they were forked from (if any)."""
    runtime = suite.processes()["runtime"]
    shims = []
    for pid_file in (suite.state / "runtime" / "tasks" / NS).glob("*/shim.pid"):
        with contextlib.suppress(OSError, ValueError):
            shims.append(int(pid_file.read_text()))
    zygotes = []
    with contextlib.suppress(OSError, ValueError):
        zygotes.append(int((suite.state / "runtime" / "zygote.pid").read_text()))
    return runtime, shims, [z for z in zygotes if pid_alive(z)]


def run_rm(address: str, ref: str, name: str) -> float:
    return timed(lambda: ctr(address, "run", "--rm", ref, name, "true"))


def start_idle(address: str, ref: str, count: int) -> None:
    names = [f"idle-{i}" for i in range(count)]
    for name in names:
        ctr(address, "run", "-d", ref, name, "sleep", "1000")

    def all_running() -> bool:
        rows = [r.split() for r in ctr(address, "tasks", "ls").stdout.splitlines()[1:]]
        return {r[0] for r in rows if r[2:3] == ["RUNNING"]} >= set(names)

    wait_until(all_running, 120, interval=0.5, what="the idle containers to run")


def remove_all(address: str) -> None:
    rows = ctr(address, "tasks", "ls", check=False).stdout.splitlines()[1:]
    for name in [r.split()[0] for r in rows if r.strip()]:
        ctr(address, "tasks", "delete", "--force", name, check=False)
    for name in ctr(address, "containers", "ls", "-q", check=False).stdout.split():
        ctr(address, "containers", "delete", name, check=False)


def kill_leftovers(started: list[tuple[int, str]], under: Path | None) -> None:
    """What ctr could not remove: our processes by PID, then mounts under ``under``."""
    for pid, start in started:
        if pid_alive(pid) and identity(pid) == (pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if under is None:
        return
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(f"{under}/")]
    for mount in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def usage(pids: list[int]) -> tuple[int, int]:
    found = [memory(p) for p in pids]
    return sum(r for r, _ in found), sum(p for _, p in found)


def mib(kib: int) -> str:
    return f"{kib / KIB:7.1f}"


def row(name: str, label: str, value: tuple[int, int]) -> None:
    print(f"  {name:<10} {label:<30} {mib(value[0])}  {mib(value[1])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle", type=int, default=20)
    args = parser.parse_args()
    images = build(no_big=True)
    times: dict[str, list[float]] = {"berth": [], "containerd": []}
    mem: dict[str, dict[str, tuple[int, int]]] = {}
    counts: dict[str, int] = {}
    with Registry(images) as registry, berth_suite() as suite, containerd() as ctd:
        ref = registry.ref("busybox")
        servers = {"berth": suite.address, "containerd": ctd}
        roots = {"berth": suite.dir, "containerd": Path(ctd).parent}
        started: list[tuple[int, str]] = []  # shims outlive their daemons: remember them
        try:
            for address in servers.values():
                ctr(address, "images", "pull", "--plain-http", ref)
            for i in range(args.rounds + 2):  # two warm-up rounds
                for name, address in servers.items():
                    elapsed = run_rm(address, ref, f"rm-{i}")
                    if i >= 2:
                        times[name].append(elapsed)

            for name, address in servers.items():
                start_idle(address, ref, args.idle)
                time.sleep(3)  # let both settle after the starts
                if name == "berth":
                    runtime, shims, zygotes = berth_processes(suite)
                    groups = {"service": [runtime], "shims": shims, "zygote": zygotes}
                    groups["suite"] = list(suite.processes().values())
                else:
                    daemon, shims = containerd_processes(ctd)
                    groups = {"service": [daemon], "shims": shims}
                started += [identity(p) for p in shims]
                mem[name] = {group: usage(pids) for group, pids in groups.items()}
                counts[name] = len(shims)
                remove_all(address)
        finally:
            for address in servers.values():
                remove_all(address)
            time.sleep(1)
            kill_leftovers(started, None)
            for root in roots.values():
                kill_leftovers([], root)
            # containerd's shim keeps runc state in /run/containerd/runc/<namespace>, and
            # runc leaves the namespace's cgroups: empty now, so rmdir removes them.
            for parent in (Path("/run/containerd/runc"), *Path("/sys/fs/cgroup").iterdir()):
                with contextlib.suppress(OSError):
                    (parent / NS).rmdir()

    print(f"ctr run --rm busybox true, {args.rounds} rounds each, alternating (ms)")
    for name, samples in times.items():
        print(f"  {name:<10} median {median(samples) * 1e3:6.0f}  p90 "
              f"{percentile(samples, 90) * 1e3:6.0f}  min {min(samples) * 1e3:6.0f}")  # fmt: skip
    print(
        f"  berth / containerd (median) {median(times['berth']) / median(times['containerd']):5.2f}"
    )

    print(f"\nmemory with {args.idle} idle containers (MiB){'RSS':>21}      PSS")
    totals: dict[str, tuple[int, int]] = {}
    for name, measured in mem.items():
        count, zygote = counts[name], measured.get("zygote", (0, 0))
        service, shim_mem = measured["service"], measured["shims"]
        row(name, "runtime service" if name == "berth" else "containerd", service)
        row("", f"{count} shims", shim_mem)
        if zygote != (0, 0):
            row("", "shim zygote", zygote)
        row("", "per shim" + (" (zygote included)" if zygote != (0, 0) else ""),
            ((shim_mem[0] + zygote[0]) // count, (shim_mem[1] + zygote[1]) // count))  # fmt: skip
        totals[name] = (service[0] + shim_mem[0] + zygote[0], service[1] + shim_mem[1] + zygote[1])
        row("", "total", totals[name])
        if "suite" in measured:  # the other services too, for a fair picture of berth
            suite_rss, suite_pss = measured["suite"]
            everything = (suite_rss + shim_mem[0] + zygote[0], suite_pss + shim_mem[1] + zygote[1])
            row("", "every berth process + shims", everything)
    (rb, pb), (rc, pc) = totals["berth"], totals["containerd"]
    print(f"  berth / containerd (total)  RSS {rb / rc:5.2f}  PSS {pb / pc:5.2f}")


if __name__ == "__main__":
    main()
