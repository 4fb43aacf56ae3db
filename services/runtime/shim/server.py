"""The shim's process: daemonize, reap, and answer the control socket."""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import sys
import threading
import time

from services.runtime.shim.proc import Reaper, ShimError, write_atomic
from services.runtime.shim.task import Task, send

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

OPERATIONS = {"create", "start", "exec", "kill", "delete", "wait", "state", "list", "pause",
              "resume", "pids", "resize", "close_io", "update", "stats", "checkpoint"}  # fmt: skip


def serve_connection(task: Task, conn: socket.socket) -> None:
    reader = conn.makefile("rb")
    try:
        for line in reader:
            try:
                req = json.loads(line)
                op = req.get("op")
                if op == "subscribe":
                    task.subscribe(conn)
                    continue
                if op not in OPERATIONS:
                    raise ShimError("InvalidArgument", f"unknown operation {op!r}")
                reply = {"ok": True, **getattr(task, op)(req)}
            except ShimError as e:
                reply = {"ok": False, "code": e.code, "error": str(e)}
            except Exception as e:  # a bug: say so rather than hang the caller
                reply = {"ok": False, "code": "Unknown", "error": f"{type(e).__name__}: {e}"}
            send(conn, reply)
    except OSError:
        pass
    finally:
        with task.lock:
            if conn in task.subscribers:
                task.subscribers.remove(conn)
        reader.close()
        conn.close()


def daemonize(task_dir: str) -> None:
    """Detach from the runtime service: it may restart while the task runs."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir(task_dir)  # as containerd's shim runs in the bundle; tests find shims by it
    null = os.open(os.devnull, os.O_RDWR)
    log = os.open(os.path.join(task_dir, "shim.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def serve(task: Task, server: socket.socket) -> None:
    """Accept connections, and follow the OOM watch, until the task is deleted."""
    server.setblocking(False)
    while not task.deleted.is_set():
        watch = task.oom
        waiting = [server.fileno()]
        timeout = 0.5
        if watch is not None:
            waiting.append(watch.fd)
            if watch.recheck_at:
                timeout = min(timeout, max(0.0, watch.recheck_at - time.monotonic()))
        ready, _, _ = select.select(waiting, [], [], timeout)
        if watch is not None and (
            watch.fd in ready or (watch.recheck_at and time.monotonic() >= watch.recheck_at)
        ):
            kills = watch.poll(woken=watch.fd in ready)
            if kills is None:  # the cgroup is gone
                task.oom = None
                watch.close()
            elif kills:
                task.on_oom()
        if server.fileno() in ready:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                continue
            conn.setblocking(True)
            threading.Thread(target=serve_connection, args=(task, conn), daemon=True).start()


def set_name(name: bytes) -> None:
    """What ps -o comm and top show (a forked shim's command line is its zygote's)."""
    ctypes.CDLL(None).prctl(PR_SET_NAME, name, 0, 0, 0)


def run(task_dir: str) -> None:
    """Be the shim of ``task_dir``: returns (in the daemon) once the task is deleted."""
    with open(os.path.join(task_dir, "shim.json")) as f:
        config = json.load(f)
    daemonize(task_dir)
    set_name(b"berth-shim")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    reaper = Reaper()
    task = Task(task_dir, config, reaper)
    threading.Thread(target=reaper.run, name="reaper", daemon=True).start()

    sock_path = config.get("socket") or os.path.join(task_dir, "shim.sock")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound and listening before the path appears: the runtime connects as soon as it does.
    staging = f"{sock_path}.{os.getpid()}"
    server.bind(staging)
    server.listen(64)
    os.rename(staging, sock_path)
    write_atomic(os.path.join(task_dir, "shim.pid"), str(os.getpid()))
    serve(task, server)
    time.sleep(0.2)  # let the delete reply and the last events go out
    server.close()
    os.unlink(sock_path)


def main() -> None:
    run(sys.argv[1])
