"""berth's task shim: one small process per task, the parent of the container's processes.

Run as ``python -S -I shim.py <task dir>`` by the runtime service; imports only
the standard library, so that each shim costs little memory. It

* daemonizes (the runtime can restart while containers run), becomes the child
  subreaper, and runs ``runc`` (or ``crun``) for the task;
* holds the processes' stdio: copies between the client's FIFOs (or log files)
  and the processes' pipes or pty, so a client going away never kills them;
* records every exit durably (``<task dir>/exit`` for the init process) before
  telling anyone, and answers a control socket (``shim.sock``): one JSON
  request per line, one JSON reply per line; ``subscribe`` streams events.

``<task dir>/shim.json`` (written by the runtime) says what to run. The shim
exits after ``delete`` of the init process, or when its init process is gone
and nothing but a delete can follow.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import termios
import threading
import time
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
INIT = ""  # the exec id of the init process


class ShimError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = (
            code  # the berth error class the runtime raises: NotFound, FailedPrecondition, ...
        )


def now_ns() -> int:
    return time.time_ns()


def write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


# ---- children ------------------------------------------------------------------


class Reaper:
    """The one waitpid(-1) loop: as subreaper the shim also inherits the container's
    orphans. Callers wait for the exits of the pids they spawned."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.exits: dict[int, tuple[int, int]] = {}  # pid -> (status, time)
        self.watchers: list[Any] = []  # callables (pid, status, time)
        self.children = 0

    def spawn(
        self,
        argv: list[str],
        fds: tuple[int, int, int],
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        with self.lock:
            pid = os.posix_spawnp(
                argv[0], argv, env if env is not None else dict(os.environ), file_actions=actions
            )
            self.children += 1
            self.lock.notify_all()
        return pid

    def wait(self, pid: int, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while pid not in self.exits:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"pid {pid} did not exit")
                self.lock.wait(remaining)
            return self.exits.pop(pid)[0]

    def run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                with self.lock:
                    self.lock.wait(0.5)
                continue
            except InterruptedError:
                continue
            at = now_ns()
            with self.lock:
                self.exits[pid] = (status, at)
                while len(self.exits) > 4096:  # orphans nobody waits for
                    del self.exits[next(iter(self.exits))]
                self.lock.notify_all()
            for watch in list(self.watchers):
                watch(pid, status, at)

    def exited(self, pid: int) -> tuple[int, int] | None:
        """The exit of ``pid`` if it already happened (a process that died very young)."""
        with self.lock:
            return self.exits.pop(pid, None)


def run_command(
    reaper: Reaper, argv: list[str], stdin_data: bytes | None = None, timeout: float = 120.0
) -> str:
    """Run a command to completion; its stdout, or ShimError with its stderr."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    try:
        pid = reaper.spawn(argv, (in_r, out_w, err_w))
    finally:
        os.close(out_w)
        os.close(err_w)
        os.close(in_r)
    if stdin_data:
        os.write(in_w, stdin_data)
    os.close(in_w)
    out, err = _read_both(out_r, err_r)
    status = reaper.wait(pid, timeout)
    if exit_code(status) != 0:
        message = _runc_error(err) or f"{os.path.basename(argv[0])} exited with {exit_code(status)}"
        raise ShimError(_classify(message), message)
    return out.decode(errors="replace")


def _read_both(out_r: int, err_r: int) -> tuple[bytes, bytes]:
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    open_fds = {out_r, err_r}
    import select

    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [])
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
                os.close(fd)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


def _runc_error(stderr: bytes) -> str:
    """runc's JSON log lines carry the message; otherwise the last line of stderr."""
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            return line.strip()
        if isinstance(entry, dict) and entry.get("msg"):
            return str(entry["msg"])
    return ""


def _classify(message: str) -> str:
    lowered = message.lower()
    if "does not exist" in lowered or "not found" in lowered or "no such" in lowered:
        return "NotFound"
    if (
        "not running" in lowered
        or "stopped" in lowered
        or "running" in lowered
        or "paused" in lowered
    ):
        return "FailedPrecondition"
    return "Unknown"


# ---- stdio -------------------------------------------------------------------


def open_output(uri: str) -> int | None:
    """An open fd for a stdout/stderr destination: a FIFO path or file:// URI; None for none."""
    if not uri:
        return None
    if uri.startswith("file://"):
        path = uri.removeprefix("file://")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    # O_RDWR: the FIFO never has no reader, so writes never fail with EPIPE when the
    # client went away; containerd's shim does the same.
    return os.open(uri, os.O_RDWR)


def open_input(path: str) -> int | None:
    if not path:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return fd


def copy(src: int, dst: int, close_dst: bool, done: threading.Event | None = None) -> None:
    try:
        while True:
            try:
                data = os.read(src, 65536)
            except OSError as e:
                if e.errno == errno.EIO:  # a pty whose other side closed
                    break
                raise
            if not data:
                break
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(dst, view) :]
                except OSError:
                    view = memoryview(b"")
    finally:
        os.close(src)
        if close_dst:
            os.close(dst)
        if done is not None:
            done.set()


def receive_fd(sock: socket.socket) -> int:
    """The pty master runc sends on the console socket (SCM_RIGHTS)."""
    conn, _ = sock.accept()
    with conn:
        _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("i")))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd: int = struct.unpack("i", data[: struct.calcsize("i")])[0]
            return fd
    raise ShimError("Unknown", "runc sent no terminal on the console socket")


class Process:
    """The init process or an exec, with its stdio plumbing."""

    def __init__(self, exec_id: str, stdio: dict[str, Any]) -> None:
        self.exec_id = exec_id
        self.stdin_path = stdio.get("stdin", "")
        self.stdout_path = stdio.get("stdout", "")
        self.stderr_path = stdio.get("stderr", "")
        self.terminal = bool(stdio.get("terminal"))
        self.spec: dict[str, Any] | None = stdio.get("spec")
        self.pid = 0
        self.status = "created"
        self.exit_status = 0
        self.exited_at = 0
        self.stdin_w: int | None = None  # our end of the process's stdin
        self.pty: int | None = None
        self.outputs_done: list[threading.Event] = []
        self.exited = threading.Event()

    def state(self) -> dict[str, Any]:
        return {
            "exec_id": self.exec_id, "pid": self.pid, "status": self.status,
            "exit_status": self.exit_status, "exited_at": self.exited_at,
            "stdin": self.stdin_path, "stdout": self.stdout_path, "stderr": self.stderr_path,
            "terminal": self.terminal,
        }  # fmt: skip

    def prepare_stdio(
        self, console_path: str
    ) -> tuple[tuple[int, int, int], socket.socket | None, list[int]]:
        """fds for runc's stdio (and a console socket for a terminal); fds to close after."""
        null = os.open(os.devnull, os.O_RDWR)
        to_close = [null]
        if self.terminal:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(console_path):
                os.unlink(console_path)
            listener.bind(console_path)
            listener.listen(1)
            return (null, null, null), listener, to_close
        stdin_fd = null
        src = open_input(self.stdin_path)
        if src is not None:
            r, w = os.pipe()
            stdin_fd = r
            to_close.append(r)
            self.stdin_w = w
            threading.Thread(target=copy, args=(src, w, True), daemon=True).start()
        fds = [stdin_fd]
        for path in (self.stdout_path, self.stderr_path):
            dst = open_output(path)
            if dst is None:
                fds.append(null)
                continue
            r, w = os.pipe()
            fds.append(w)
            to_close.append(w)
            done = threading.Event()
            self.outputs_done.append(done)
            threading.Thread(target=copy, args=(r, dst, True, done), daemon=True).start()
        return (fds[0], fds[1], fds[2]), None, to_close

    def attach_pty(self, master: int) -> None:
        self.pty = master
        out = open_output(self.stdout_path)
        if out is not None:
            done = threading.Event()
            self.outputs_done.append(done)
            threading.Thread(
                target=copy, args=(os.dup(master), out, True, done), daemon=True
            ).start()
        src = open_input(self.stdin_path)
        if src is not None:
            threading.Thread(target=copy, args=(src, os.dup(master), True), daemon=True).start()

    def close_stdin(self) -> None:
        if self.stdin_w is not None:
            with _suppress():
                os.close(self.stdin_w)
            self.stdin_w = None

    def resize(self, width: int, height: int) -> None:
        if self.pty is None:
            raise ShimError(
                "FailedPrecondition", f"process {self.exec_id or 'init'} has no terminal"
            )
        fcntl.ioctl(self.pty, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], OSError)


# ---- the task ------------------------------------------------------------------


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
        # Socket paths are limited to 107 bytes: a short hashed name in a short directory.
        tag = hashlib.sha256(f"{self.dir}/{proc.exec_id}".encode()).hexdigest()[:16]
        console = os.path.join(self.console_dir, f"{tag}.console")
        fds, listener, to_close = proc.prepare_stdio(console)
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
        finally:
            for fd in to_close:
                with _suppress():
                    os.close(fd)
        if exit_code(status) != 0:
            if listener is not None:
                listener.close()
            message = (
                _runtime_log_error(os.path.join(self.dir, "runtime.log"))
                or f"runtime exited with {exit_code(status)}"
            )
            raise ShimError(_classify(message), message)
        if receiver is not None and listener is not None:
            receiver.join(10)
            listener.close()
            if not pty_box:
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
        return {"pid": init.pid}

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
        with self.lock:
            if exec_id:
                if proc.status not in ("stopped", "created"):
                    raise ShimError("FailedPrecondition", f"exec {exec_id} is still running")
                del self.processes[exec_id]
                return proc.state()
            if proc.status not in ("stopped", "created"):
                raise ShimError(
                    "FailedPrecondition", f"cannot delete task {self.id}: it is {proc.status}"
                )
            if proc.status == "created" and not self.restore_from:
                with _suppress_shim():
                    self._runc("kill", self.id, "9")
                proc.exited.wait(10)
            try:
                self._runc("delete", "--force", self.id)
            except ShimError as e:
                if e.code != "NotFound":
                    raise
            state = proc.state()
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
            with _suppress():
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
                    _send(conn, {"type": "exit", **proc.state(), "status": proc.exit_status})

    def _publish(self, event: dict[str, Any]) -> None:
        with self.lock:
            for conn in list(self.subscribers):
                try:
                    _send(conn, event)
                except OSError:
                    self.subscribers.remove(conn)


class _suppress_shim:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ShimError)


def _runtime_log_error(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return _runc_error(f.read()[-65536:])
    except OSError:
        return ""


def _send(conn: socket.socket, doc: dict[str, Any]) -> None:
    conn.sendall(json.dumps(doc).encode() + b"\n")


# ---- the control socket ----------------------------------------------------------

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
            _send(conn, reply)
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
    null = os.open(os.devnull, os.O_RDWR)
    log = os.open(os.path.join(task_dir, "shim.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def main() -> None:
    task_dir = sys.argv[1]
    with open(os.path.join(task_dir, "shim.json")) as f:
        config = json.load(f)
    daemonize(task_dir)
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
    server.settimeout(0.5)
    while not task.deleted.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        threading.Thread(target=serve_connection, args=(task, conn), daemon=True).start()
    time.sleep(0.2)  # let the delete reply and the last events go out
    server.close()
    os.unlink(sock_path)


if __name__ == "__main__":
    main()
