"""Real processes for tests: a NATS server, the whole berth suite, Debian's ctr.

Everything started here is stopped by PID and its temporary directories are
removed; a test that leaves a process behind fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CTR = shutil.which("ctr") or "/usr/bin/ctr"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_tempdir(prefix: str) -> Path:
    # Unix socket paths are limited to 107 bytes: keep roots short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class NatsServer:
    """A private nats-server with JetStream on a free loopback port."""

    def __init__(self) -> None:
        self.dir = short_tempdir("berth-nats-")
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(self.port),
                "-js", "-sd", str(self.dir / "js"), "-l", str(self.dir / "nats.log"),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

        def accepting() -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return True
            return False

        wait_until(accepting, 10, what="nats-server to accept")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def processes_in(directory: Path) -> list[int]:
    """PIDs whose working directory is ``directory`` or below: shims run in their
    task's directory (forked shims share their zygote's command line)."""
    found = []
    prefix = str(directory)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        if (cwd == prefix or cwd.startswith(prefix + "/")) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def remove_tasks(state: Path) -> list[str]:
    """Containers outlive berth by design; a test's must not outlive the test.

    For every task left under ``state``: the runtime deletes the container (its
    processes and cgroups), the shim is killed by PID, the rootfs unmounted.
    """
    removed = []
    for shim_json in sorted(state.glob("runtime/tasks/*/*/shim.json")):
        task_dir = shim_json.parent
        config = json.loads(shim_json.read_text())
        subprocess.run(
            [config["runtime"], "--root", config["runtime_root"], "delete", "--force", config["id"]],
            capture_output=True, timeout=60,
        )  # fmt: skip
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int((task_dir / "shim.pid").read_text()), signal.SIGKILL)
        subprocess.run(["umount", "-l", str(task_dir / "rootfs")], capture_output=True)
        removed.append(f"{task_dir.parent.name}/{task_dir.name}")
    # runc makes a cgroup per namespace (cgroupsPath /<ns>/<id>); remove the now-empty ones.
    for runc_root in state.glob("runtime/runc/*"):
        for controller in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (controller / runc_root.name).rmdir()
    return removed


class Suite:
    """``berthd`` on temporary root and state directories."""

    def __init__(
        self,
        *,
        database_url: str | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        root: Path | None = None,
        config: str = "",
    ) -> None:
        self.dir = short_tempdir("berth-")
        if config:
            config_path = self.dir / "berth.toml"
            config_path.write_text(config)
            extra_args = ["--config", str(config_path), *(extra_args or [])]
        self.root = root or self.dir / "root"  # elsewhere to measure another filesystem
        self.state = self.dir / "state"
        self.address = str(self.state / "berth.sock")
        self.database_url = database_url
        self.extra_args = extra_args or []
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "berthd.log"
        self._seen_pids: set[int] = set()

    def start(self, timeout: float = 60) -> Suite:
        argv = [
            str(VENV_BIN / "berthd"), "--root", str(self.root), "--state", str(self.state),
            *(["--database-url", self.database_url] if self.database_url else []),
            *self.extra_args,
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True, env=self.env,
        )  # fmt: skip
        log.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"berthd did not become ready:\n{self.log_tail()}")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith(b"{") and b'"ready"' in line:
                    break
        self.processes()  # remember PIDs for the leak check
        return self

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def processes(self) -> dict[str, int]:
        data: dict[str, int] = json.loads((self.state / "processes.json").read_text())
        self._seen_pids.update(data.values())
        return data

    @property
    def config_path(self) -> Path:
        return self.state / "berthd.toml"

    def ctr(self, *args: str, namespace: str = "default", check: bool = True,
            timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        cmd = [CTR, "--address", self.address, "--namespace", namespace, *args]
        result = subprocess.run(
            cmd, capture_output=True, text=input is None, timeout=timeout, input=input,
            env={**os.environ, "CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS": "true"},
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def stop(self) -> list[int]:
        """Stop berthd with SIGTERM; return the PIDs that were still alive afterwards."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.processes()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        remove_tasks(self.state)
        leaked = [pid for pid in sorted(self._seen_pids) if pid_alive(pid)]
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leaked

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_suite(**kwargs: Any) -> Iterator[Suite]:
    suite = Suite(**kwargs).start()
    try:
        yield suite
    finally:
        leaked = suite.stop()
        log = suite.log_tail()
        suite.cleanup()
        assert not leaked, f"berthd left processes behind: {leaked}\n{log}"


def health_ok(address: str, timeout: float = 1.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from shared.config import grpc_target

    with grpc.insecure_channel(grpc_target(address)) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class ServiceProcess:
    """One berth service started alone (``python -m services.<name>``), as compose does."""

    def __init__(self, name: str, config_path: Path, listen: str, log_path: Path) -> None:
        self.name = name
        self.config_path = config_path
        self.listen = listen
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}", "--config", str(self.config_path),
             "--listen", self.listen],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            return health_ok(self.listen, 0.5)

        wait_until(ready, timeout, what=f"{self.name} to serve on {self.listen}")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
