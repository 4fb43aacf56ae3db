"""Task metrics: runc's statistics as containerd's cgroup v1 ``Metrics`` message.

``runc events --stats`` reports the cgroup counters of a container in one JSON
document; containerd's runc shim turns the same counters into
``io.containerd.cgroups.v1.Metrics`` (this host mounts cgroup v1 controllers),
which ``ctr task metrics`` prints.
"""

from __future__ import annotations

import time
from typing import Any

from shared import typeurl
from shared.api.containerd.cgroups.v1 import metrics_pb2 as v1
from shared.api.containerd.types import metrics_pb2
from shared.pbutil import timestamp

# runc's memory "raw" keys -> MemoryStat fields (same names as the cgroup v1 memory.stat file).
_MEMORY_RAW = (
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
    "pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "hierarchical_memory_limit", "total_cache",
    "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty", "total_writeback",
    "total_pgpgin", "total_pgpgout", "total_pgfault", "total_pgmajfault",
    "total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
    "total_unevictable",
)  # fmt: skip
_RENAMED = {
    "pgpgin": "pg_pg_in",
    "pgpgout": "pg_pg_out",
    "pgfault": "pg_fault",
    "pgmajfault": "pg_maj_fault",
}


def _entry(doc: dict[str, Any]) -> v1.MemoryEntry:
    return v1.MemoryEntry(
        limit=int(doc.get("limit", 0)), usage=int(doc.get("usage", 0)),
        max=int(doc.get("max", 0)), failcnt=int(doc.get("failcnt", 0)),
    )  # fmt: skip


def cgroup_v1_metrics(stats: dict[str, Any]) -> v1.Metrics:
    cpu = stats.get("cpu") or {}
    usage = cpu.get("usage") or {}
    throttling = cpu.get("throttling") or {}
    memory = stats.get("memory") or {}
    raw = memory.get("raw") or {}
    memory_fields: dict[str, int] = {}
    for key in _MEMORY_RAW:
        name = key
        for short, long in _RENAMED.items():
            name = name.replace(short, long)
        if key in raw:
            memory_fields[name] = int(raw[key])
    if "hierarchical_memsw_limit" in raw:
        memory_fields["hierarchical_swap_limit"] = int(raw["hierarchical_memsw_limit"])
    pids = stats.get("pids") or {}
    return v1.Metrics(
        pids=v1.PidsStat(current=int(pids.get("current", 0)), limit=int(pids.get("limit", 0))),
        cpu=v1.CPUStat(
            usage=v1.CPUUsage(
                total=int(usage.get("total", 0)),
                kernel=int(usage.get("kernel", 0)),
                user=int(usage.get("user", 0)),
                per_cpu=[int(x) for x in usage.get("percpu") or []],
            ),
            throttling=v1.Throttle(
                periods=int(throttling.get("periods", 0)),
                throttled_periods=int(throttling.get("throttledPeriods", 0)),
                throttled_time=int(throttling.get("throttledTime", 0)),
            ),
        ),
        memory=v1.MemoryStat(
            usage=_entry(memory.get("usage") or {}),
            swap=_entry(memory.get("swap") or {}),
            kernel=_entry(memory.get("kernel") or {}),
            kernel_tcp=_entry(memory.get("kernelTCP") or {}),
            **memory_fields,
        ),
    )


def metrics_for(task_id: str, stats: dict[str, Any]) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(
        timestamp=timestamp(time.time_ns()),
        id=task_id,
        data=typeurl.pack(cgroup_v1_metrics(stats)),
    )
