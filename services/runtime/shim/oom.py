"""OOM kills in a container's memory cgroup, seen as containerd's runc shim sees them.

* cgroup v1 (where this host's memory controller lives): an eventfd registered
  for ``memory.oom_control`` through ``cgroup.event_control``. The kernel
  signals it whenever the cgroup runs out of memory, which while a victim dies
  can be hundreds of times a second, and once more when the cgroup is removed.
* cgroup v2: inotify on ``memory.events``.

Either way the wake-up only says "look": what is reported is the kernel's
``oom_kill`` counter going up, so one kill gives one ``/tasks/oom``, not a
flood. On v1 the counter moves just after the notification (the kernel
notifies, then kills), so it is read again shortly after each wake-up.

The cgroup is found from ``/proc/<pid>/cgroup`` of the container's init and the
host's cgroup mounts, so it works whatever ``cgroupsPath`` or cgroup driver the
spec used. The shim's main loop waits on ``OOMWatch.fd`` with its socket, and
the shim also looks when the init exits and before the cgroup is deleted, so a
kill is never missed because the container went away first.
"""

from __future__ import annotations

import os
import threading
import time

IN_MODIFY = 0x2
RECHECK = 0.1  # seconds after a v1 notification to look at the counter again


class OOMWatch:
    def __init__(self, fd: int, counter_file: str, holds: int = -1) -> None:
        self.fd = fd  # readable when something happened
        self.counter_file = counter_file  # memory.oom_control (v1) or memory.events (v2)
        self.holds = holds  # v1: memory.oom_control, open for as long as the registration
        self.recheck_at = 0.0  # time.monotonic() of a pending second look, or 0
        self.notices = 0  # v1 kernels before 4.13 have no counter: count notifications
        self.lock = threading.Lock()  # polled by the main loop and by exit and delete
        self.kills = self._kills()

    def _kills(self) -> int:
        with open(self.counter_file) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return self.notices

    def poll(self, woken: bool = False) -> int | None:
        """New OOM kills since the last poll (``woken``: ``fd`` turned readable);
        None once the cgroup is gone and the watch should be closed."""
        with self.lock:
            if self.fd < 0:
                return None
            if woken:
                self._drain()
                if self.holds >= 0:
                    self.recheck_at = time.monotonic() + RECHECK
            elif self.recheck_at and time.monotonic() >= self.recheck_at:
                self.recheck_at = 0.0
            try:
                kills = self._kills()
            except OSError:
                return None
            new, self.kills = kills - self.kills, kills
            return max(new, 0)

    def _drain(self) -> None:
        try:
            if self.holds >= 0:
                self.notices += os.eventfd_read(self.fd)
            else:
                while os.read(self.fd, 4096):
                    pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Only the main loop closes, never while it waits on ``fd``."""
        with self.lock:
            for fd in (self.fd, self.holds):
                if fd >= 0:
                    os.close(fd)
            self.fd = self.holds = -1


def _mounts() -> list[tuple[str, str, str, list[str]]]:
    """(root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                found.append((fields[3], fields[4], tail[0], tail[2].split(",")))
    return found


def _under(mount_point: str, root: str, path: str) -> str:
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return mount_point.rstrip("/") + "/" + path.lstrip("/")


def memory_cgroup(pid: int) -> tuple[int, str] | None:
    """(cgroup version, directory) of ``pid``'s memory cgroup, or None."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    mounts = _mounts()
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            for root, point, fstype, options in mounts:
                if fstype == "cgroup" and "memory" in options:
                    return 1, _under(point, root, path)
    for hierarchy, controllers, path in lines:
        if hierarchy == "0" and not controllers:
            for root, point, fstype, _ in mounts:
                directory = _under(point, root, path)
                if fstype == "cgroup2" and os.path.exists(f"{directory}/memory.events"):
                    return 2, directory
    return None


def watch(pid: int) -> OOMWatch | None:
    """A watch on the memory cgroup of ``pid``; None where it has none."""
    found = memory_cgroup(pid)
    if found is None:
        return None
    version, directory = found
    opened: list[int] = []
    try:
        if version == 1:
            opened.append(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
            counter = f"{directory}/memory.oom_control"
            opened.append(os.open(counter, os.O_RDONLY | os.O_CLOEXEC))
            with open(f"{directory}/cgroup.event_control", "w") as f:
                f.write(f"{opened[0]} {opened[1]}")
            return OOMWatch(opened[0], counter, opened[1])
        import ctypes  # already loaded by the shim for prctl

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # IN_NONBLOCK | IN_CLOEXEC
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        opened.append(fd)
        counter = f"{directory}/memory.events"
        if libc.inotify_add_watch(fd, counter.encode(), IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        return OOMWatch(fd, counter)
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
