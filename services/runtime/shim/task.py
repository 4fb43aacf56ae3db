"""The task a shim runs: its init process, execs, and the runtime (runc or crun) calls."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading

from services.runtime.shim import oom
from services.runtime.shim.proc import (
    Reaper,
    ShimError,
    Suppress,
    classify,
    exit_code,
    run_command,
    runtime_log_error,
    write_atomic,
)
from services.runtime.shim.stdio import Process, receive_fd

TYPE_CHECKING = False  # as in proc.py: no typing at run time
if TYPE_CHECKING:
    from typing import Any

INIT = ""  # the exec id of the init process


class Task:
    def __init__(self, task_dir: str, config: dict[str, Any], reaper: Reaper) -> None:
        self.dir = task_dir
        self.id: str = config["id"]
        self.bundle: str = config["bundle"]
        self.runtime: list[str] = [
            config["runtime"],
            "--root", config["runtime_root"],
            "--log", os.path.join(task_dir, "runtime.log"),
            "--log-format", "json",
            *config.get("runtime_args", []),
        ]  # fmt: skip
        self.criu: str = config.get("criu", "")
        self.console_dir: str = config.get("console_dir", task_dir)
        self.reaper = reaper
        self.lock = threading.RLock()
        self.processes: dict[str, Process] = {INIT: Process(INIT, config.get("stdio", {}))}
        self.subscribers: list[socket.socket] = []
        self.deleted = threading.Event()
        self.restore_from = ""  # a checkpoint image that start() will restore
        self.owner = {"id": self.id, "namespace": str(config.get("namespace", ""))}
        self.oom: oom.OOMWatch | None = None  # the main loop waits on it
        self.undelivered: list[dict[str, Any]] = []  # OOMs nobody was subscribed for
        self._consoles = 0
        reaper.watchers.append(self._on_exit)

    def _runc(self, *args: str, stdin_data: bytes | None = None, timeout: float = 120.0) -> str:
        return run_command(self.reaper, [*self.runtime, *args], stdin_data, timeout)

    def process(self, exec_id: str) -> Process:
        found = self.processes.get(exec_id or INIT)
        if found is None:
            raise ShimError("NotFound", f"process {exec_id} not found in task {self.id}")
        return found

    # -- lifecycle ---------------------------------------------------------

    def _launch(self, proc: Process, argv_tail: list[str]) -> None:
        pid_file = os.path.join(self.dir, f"{proc.exec_id or 'init'}.pid")
        # Socket paths are limited to 107 bytes: a short name in a short directory.
        self._consoles += 1
        console = os.path.join(self.console_dir, f"{os.getpid()}-{self._consoles}.console")
        fds, listener, to_close = proc.prepare_stdio(console, self.reaper, self.owner)
        args = [*argv_tail[:-1], "--pid-file", pid_file]
        if listener is not None:
            args += ["--console-socket", console]
        args.append(argv_tail[-1])
        pty_box: list[int] = []
        receiver = None
        if listener is not None:
            receiver = threading.Thread(
                target=lambda: pty_box.append(receive_fd(listener)), daemon=True
            )
            receiver.start()
        try:
            pid = self.reaper.spawn([*self.runtime, *args], fds)
            status = self.reaper.wait(pid, 120)
        except BaseException:
            if listener is not None:
                listener.close()
                _unlink(console)
            proc.abandon_stdio(self.reaper)
            raise
        finally:
            for fd in to_close:
                with Suppress():
                    os.close(fd)
        if exit_code(status) != 0:
            if listener is not None:
                listener.close()
                _unlink(console)
            proc.abandon_stdio(self.reaper)
            message = (
                runtime_log_error(os.path.join(self.dir, "runtime.log"))
                or f"runtime exited with {exit_code(status)}"
            )
            raise ShimError(classify(message), message)
        if receiver is not None and listener is not None:
            receiver.join(10)
            listener.close()
            _unlink(console)
            if not pty_box:
                proc.abandon_stdio(self.reaper)
                raise ShimError("Unknown", "the runtime did not hand over the terminal")
            proc.attach_pty(pty_box[0])
        with open(pid_file) as f:
            proc.pid = int(f.read().strip())
        early = self.reaper.exited(proc.pid)
        if early is not None:  # gone before we knew its pid: report it now
            threading.Thread(
                target=self._finish, args=(proc, exit_code(early[0]), early[1]), daemon=True
            ).start()

    def create(self, req: dict[str, Any]) -> dict[str, Any]:
        init = self.processes[INIT]
        with self.lock:
            args = ["create", "--bundle", self.bundle]
            if req.get("no_pivot"):
                args.append("--no-pivot")
            if req.get("checkpoint"):
                # As in containerd, a task made from a checkpoint is restored on
                # start; until then it exists only as the image on disk.
                self.restore_from = str(req["checkpoint"])
                init.status = "created"
                return {"pid": 0}
            self._launch(init, [*args, self.id])
            init.status = "created"
            self._watch_oom(init.pid)
        return {"pid": init.pid}

    def _watch_oom(self, pid: int) -> None:
        try:
            self.oom = oom.watch(pid)
        except OSError as e:  # no OOM events then, but the task runs
            print(f"shim {self.id}: cannot watch for OOM kills: {e}", flush=True)

    def check_oom(self) -> None:
        """Look at the OOM counter now (the main loop also does on every notification)."""
        watch = self.oom
        if watch is not None and watch.poll():
            self.on_oom()

    def on_oom(self) -> None:
        event = {"type": "oom"}
        with self.lock:
            if not self._publish(event):  # the runtime is restarting: hand it over later
                self.undelivered.append(event)
                del self.undelivered[:-16]

    def start(self, req: dict[str, Any]) -> dict[str, Any]:
        exec_id = req.get("exec_id", "")
        proc = self.process(exec_id)
        with self.lock:
            if proc.status != "created":
                raise ShimError(
                    "FailedPrecondition",
                    f"process {exec_id or self.id} is {proc.status}, not created",
                )
            if exec_id:
                if self.processes[INIT].status not in ("running", "paused"):
                    raise ShimError("FailedPrecondition", f"task {self.id} is not running")
                spec_path = os.path.join(self.dir, f"{exec_id}.json")
                with open(spec_path, "w") as f:
                    json.dump(proc.spec, f)
                self._launch(proc, ["exec", "--detach", "--process", spec_path, self.id])
            elif self.restore_from:
                args = ["restore", "--detach", "--bundle", self.bundle]
                args += ["--image-path", self.restore_from, self.id]
                self._launch(proc, args)
                self._watch_oom(proc.pid)
                import shutil  # only restores pay for it; shims stay small

                shutil.rmtree(self.restore_from, ignore_errors=True)
                self.restore_from = ""
            else:
                self._runc("start", self.id)
            if proc.status == "created":  # an immediate exit may have been recorded already
                proc.status = "running"
        self._publish({"type": "start", "exec_id": exec_id, "pid": proc.pid})
        return {"pid": proc.pid}

    def _on_exit(self, pid: int, status: int, at: int) -> None:
        for proc in list(self.processes.values()):
            if proc.pid == pid and not proc.exited.is_set():
                threading.Thread(
                    target=self._finish, args=(proc, exit_code(status), at), daemon=True
                ).start()

    def _finish(self, proc: Process, status: int, at: int) -> None:
        for done in proc.outputs_done:  # the last output reaches its destination first
            done.wait(5)
        with self.lock:
            proc.status, proc.exit_status, proc.exited_at = "stopped", status, at
            if proc.exec_id == INIT:
                write_atomic(
                    os.path.join(self.dir, "exit"),
                    json.dumps({"pid": proc.pid, "status": status, "exited_at": at}),
                )
            proc.close_stdin()
        if proc.exec_id == INIT:
            self.check_oom()  # the kernel counts a kill before its victim dies: OOM first
        proc.exited.set()
        self._publish(
            {
                "type": "exit",
                "exec_id": proc.exec_id,
                "pid": proc.pid,
                "status": status,
                "exited_at": at,
            }
        )

    def exec(self, req: dict[str, Any]) -> dict[str, Any]:
        exec_id = req["exec_id"]
        with self.lock:
            if exec_id in self.processes:
                raise ShimError("AlreadyExists", f"exec {exec_id} already exists in task {self.id}")
            if self.processes[INIT].status not in ("running", "paused", "created"):
                raise ShimError("FailedPrecondition", f"task {self.id} is not running")
            self.processes[exec_id] = Process(
                exec_id, {**req.get("stdio", {}), "spec": req["spec"]}
            )
        self._publish({"type": "exec-added", "exec_id": exec_id})
        return {}

    def kill(self, req: dict[str, Any]) -> dict[str, Any]:
        exec_id = req.get("exec_id", "")
        sig = int(req.get("signal") or signal.SIGTERM)
        proc = self.process(exec_id)
        if proc.status == "stopped":
            raise ShimError("NotFound", f"process {exec_id or self.id} already finished")
        if exec_id:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                raise ShimError("NotFound", f"process {exec_id} already finished") from None
        else:
            self._runc("kill", *(["--all"] if req.get("all") else []), self.id, str(sig))
        return {}

    def delete(self, req: dict[str, Any]) -> dict[str, Any]:
        exec_id = req.get("exec_id", "")
        proc = self.process(exec_id)
        if exec_id:
            with self.lock:
                if proc.status not in ("stopped", "created"):
                    raise ShimError("FailedPrecondition", f"exec {exec_id} is still running")
                del self.processes[exec_id]
            proc.stop_logger(self.reaper)
            return proc.state()
        with self.lock:
            if proc.status not in ("stopped", "created"):
                raise ShimError(
                    "FailedPrecondition", f"cannot delete task {self.id}: it is {proc.status}"
                )
            if proc.status == "created" and not self.restore_from:
                with Suppress(ShimError):
                    self._runc("kill", self.id, "9")
                proc.exited.wait(10)
            self.check_oom()  # the last chance: runc delete removes the cgroup
            try:
                self._runc("delete", "--force", self.id)
            except ShimError as e:
                if e.code != "NotFound":
                    raise
            state = proc.state()
        for each in list(self.processes.values()):
            each.stop_logger(self.reaper)  # as containerd: SIGTERM, then time to flush
        self._publish({"type": "delete", **state})
        self.deleted.set()
        return state

    def wait(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req.get("exec_id", ""))
        proc.exited.wait()
        return proc.state()

    def state(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req.get("exec_id", ""))
        with self.lock:
            return proc.state()

    def list(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"processes": [p.state() for p in self.processes.values()]}

    def pause(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._runc("pause", self.id)
            self.processes[INIT].status = "paused"
        self._publish({"type": "paused"})
        return {}

    def resume(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._runc("resume", self.id)
            self.processes[INIT].status = "running"
        self._publish({"type": "resumed"})
        return {}

    def pids(self, req: dict[str, Any]) -> dict[str, Any]:
        pids = json.loads(self._runc("ps", "--format", "json", self.id) or "[]")
        by_pid = {p.pid: p.exec_id for p in self.processes.values() if p.exec_id}
        return {"processes": [{"pid": pid, "exec_id": by_pid.get(pid, "")} for pid in pids]}

    def resize(self, req: dict[str, Any]) -> dict[str, Any]:
        self.process(req.get("exec_id", "")).resize(int(req["width"]), int(req["height"]))
        return {}

    def close_io(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.process(req.get("exec_id", ""))
        if proc.pty is not None and req.get("stdin"):
            # EOF for a terminal is a ^D on the line.
            with Suppress():
                os.write(proc.pty, b"\x04")
        proc.close_stdin()
        return {}

    def update(self, req: dict[str, Any]) -> dict[str, Any]:
        self._runc(
            "update", "--resources", "-", self.id, stdin_data=json.dumps(req["resources"]).encode()
        )
        return {}

    def stats(self, req: dict[str, Any]) -> dict[str, Any]:
        out = self._runc("events", "--stats", self.id)
        return {"stats": json.loads(out).get("data", {})}

    def checkpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        args = ["checkpoint", "--image-path", req["path"]]
        if req.get("work_path"):
            args += ["--work-path", req["work_path"]]
        if not req.get("exit"):
            args.append("--leave-running")  # containerd keeps the task running unless asked
        flags = {
            "open_tcp": "--tcp-established",
            "external_unix_sockets": "--ext-unix-sk",
            "terminal": "--shell-job",
            "file_locks": "--file-locks",
        }
        args += [option for flag, option in flags.items() if req.get(flag)]
        self._runc(*args, self.id, timeout=600)
        self._publish({"type": "checkpointed", "path": req["path"]})
        return {}

    # -- events ----------------------------------------------------------------

    def subscribe(self, conn: socket.socket) -> None:
        with self.lock:
            self.subscribers.append(conn)
            # A subscriber that came late learns of exits that already happened.
            for proc in self.processes.values():
                if proc.status == "stopped":
                    send(conn, {"type": "exit", **proc.state(), "status": proc.exit_status})
            for event in self.undelivered:
                send(conn, event)
            self.undelivered.clear()

    def _publish(self, event: dict[str, Any]) -> int:
        """Send ``event`` to every subscriber; how many got it."""
        delivered = 0
        with self.lock:
            for conn in list(self.subscribers):
                try:
                    send(conn, event)
                    delivered += 1
                except OSError:  # a runtime that died: its connection is gone
                    self.subscribers.remove(conn)
        return delivered


def _unlink(path: str) -> None:
    with Suppress(FileNotFoundError):
        os.unlink(path)


def send(conn: socket.socket, doc: dict[str, Any]) -> None:
    conn.sendall(json.dumps(doc).encode() + b"\n")
