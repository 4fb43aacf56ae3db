"""CRI resource usage from a task's cgroup metrics, as kubelet reads it.

cgroup v1 and v2 metrics (containerd's ``io.containerd.cgroups.v1/v2.Metrics``) are
reduced to CPU time and memory with kubelet's working set (usage less inactive file
pages); CPU cores in use are the difference between two samples of the same
container, as containerd's CRI computes ``usage_nano_cores``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    timestamp: int
    cpu_ns: int = 0
    nano_cores: int | None = None
    memory_usage: int = 0
    working_set: int = 0
    rss: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    memory_limit: int = 0
    processes: int = 0

    def __add__(self, other: Usage) -> Usage:
        cores = None
        if self.nano_cores is not None or other.nano_cores is not None:
            cores = (self.nano_cores or 0) + (other.nano_cores or 0)
        return Usage(
            max(self.timestamp, other.timestamp),
            self.cpu_ns + other.cpu_ns,
            cores,
            self.memory_usage + other.memory_usage,
            self.working_set + other.working_set,
            self.rss + other.rss,
            self.page_faults + other.page_faults,
            self.major_page_faults + other.major_page_faults,
            0,
            self.processes + other.processes,
        )


# Beyond this the kernel reports "no limit" (v1 gives 2^63 rounded to pages).
_NO_LIMIT = 1 << 62


def usage_from_metrics(metrics: Any, timestamp: int | None = None) -> Usage:
    """A :class:`Usage` from cgroup v1 or v2 metrics."""
    now = timestamp if timestamp is not None else time.time_ns()
    cpu, memory = metrics.cpu, metrics.memory
    if metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v1.Metrics":
        used = memory.usage.usage
        limit = memory.usage.limit
        return Usage(
            now,
            cpu.usage.total,
            None,
            used,
            max(used - memory.total_inactive_file, 0),
            memory.total_rss,
            memory.total_pg_fault,
            memory.total_pg_maj_fault,
            limit if 0 < limit < _NO_LIMIT else 0,
            metrics.pids.current,
        )
    used = memory.usage
    limit = memory.usage_limit
    return Usage(  # v2
        now,
        cpu.usage_usec * 1000,
        None,
        used,
        max(used - memory.inactive_file, 0),
        memory.anon,
        memory.pgfault,
        memory.pgmajfault,
        limit if 0 < limit < _NO_LIMIT else 0,
        metrics.pids.current,
    )


class CpuRates:
    """The last CPU sample per container, to turn CPU time into cores in use."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def rate(self, container_id: str, usage: Usage) -> Usage:
        with self._lock:
            previous = self._last.get(container_id)
            self._last[container_id] = (usage.timestamp, usage.cpu_ns)
        if previous is None or usage.timestamp <= previous[0] or usage.cpu_ns < previous[1]:
            return usage
        cores = (usage.cpu_ns - previous[1]) * 1_000_000_000 // (usage.timestamp - previous[0])
        return Usage(**{**usage.__dict__, "nano_cores": cores})

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._last.pop(container_id, None)


def network_usage(pid: int) -> list[tuple[str, int, int, int, int]]:
    """(interface, rx bytes, rx errors, tx bytes, tx errors) in ``pid``'s network
    namespace, loopback left out."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return []
    found = []
    for line in lines:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() == "lo" or len(fields) < 16:
            continue
        found.append(
            (name.strip(), int(fields[0]), int(fields[2]), int(fields[8]), int(fields[10]))
        )
    return found
