"""Tasks: running containers through one shim per task (containerd's runtime v2 + tasks service).

Layout per task, under ``<state>/runtime``::

    tasks/<ns>/<id>/config.json   the OCI bundle (rootfs/ mounted from the snapshot)
    tasks/<ns>/<id>/shim.json     what the shim runs; shim.pid, shim.log, exit
    s/<hash>.sock                 the shim's control socket (kept short: 107-byte limit)

The service keeps no task state of its own that matters: on start it finds
every task directory, reconnects to live shims, and reports exits that
happened while it was down (a task whose ``exit`` record has no
``exit.reported`` marker next to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.runtime import checkpoint
from services.runtime.container_store import ContainerRecords
from services.runtime.shim_client import ShimClient
from services.runtime.shims import ShimStarter
from shared import mount as mounting
from shared import typeurl
from shared.api.containerd.events import task_pb2 as events
from shared.api.containerd.runc.options import oci_pb2 as runc_options
from shared.api.containerd.types import mount_pb2
from shared.containers import Container
from shared.content import Store
from shared.diff import Descriptor
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from shared.events.outbox import Outbox
from shared.pbutil import timestamp
from shared.snapshots import Mount

log = logging.getLogger(__name__)

# Where the install command puts the criu and crun that work here; searched before PATH.
TOOLS_BIN = "/opt/berth/bin"
RUNC_RUNTIMES = {"io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux"}


@dataclass
class ProcessState:
    exec_id: str
    pid: int
    status: str  # created, running, paused, stopped
    exit_status: int = 0
    exited_at: int = 0
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False

    @classmethod
    def from_shim(cls, doc: Mapping[str, Any]) -> ProcessState:
        return cls(
            exec_id=doc.get("exec_id", ""),
            pid=int(doc.get("pid", 0)),
            status=doc.get("status", "unknown"),
            exit_status=int(doc.get("exit_status", 0)),
            exited_at=int(doc.get("exited_at", 0)),
            stdin=doc.get("stdin", ""),
            stdout=doc.get("stdout", ""),
            stderr=doc.get("stderr", ""),
            terminal=bool(doc.get("terminal", False)),
        )


@dataclass
class Task:
    namespace: str
    id: str
    dir: Path
    shim: ShimClient
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exits: dict[str, asyncio.Future[ProcessState]] = field(default_factory=dict)
    gone: bool = False  # the shim died: only delete remains

    def exit_future(self, exec_id: str) -> asyncio.Future[ProcessState]:
        if exec_id not in self.exits:
            self.exits[exec_id] = asyncio.get_running_loop().create_future()
        return self.exits[exec_id]


def _short(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def _runc_options(any_value: Any) -> runc_options.Options:
    opts = runc_options.Options()
    if any_value is not None and any_value.type_url:
        if typeurl.message_name(any_value.type_url) != opts.DESCRIPTOR.full_name:
            raise InvalidArgument(f"runtime options of type {any_value.type_url} are not runc's")
        opts.ParseFromString(any_value.value)
    return opts


def _own_oom_score_adj() -> int:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


class TaskManager:
    def __init__(
        self,
        state: Path,
        containers: ContainerRecords,
        outbox: Outbox,
        *,
        default_binary: str = "runc",
        criu: str = "",
        content: Store | None = None,
    ) -> None:
        self.root = state / "runtime"
        self.sockets = self.root / "s"
        self.sockets.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.containers = containers
        self.outbox = outbox
        self.default_binary = default_binary
        self.criu = criu
        self.content = content  # where checkpoints go, and come from
        self.tasks: dict[tuple[str, str], Task] = {}
        self.shims = ShimStarter(self.root)
        self._spawn: Callable[[Coroutine[Any, Any, None], str], None] | None = None

    # -- bookkeeping -------------------------------------------------------

    def task_dir(self, namespace: str, task_id: str) -> Path:
        return self.root / "tasks" / namespace / task_id

    def get(self, namespace: str, task_id: str) -> Task:
        task = self.tasks.get((namespace, task_id))
        if task is None:
            raise NotFound(f"task {task_id}: not found")
        return task

    def _follow(self, task: Task) -> None:
        assert self._spawn is not None, "start() the manager first"
        self._spawn(self._watch(task), f"shim {task.namespace}/{task.id}")

    async def adopt(self, spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None:
        """Adopt the tasks left by an earlier run; ``spawn`` runs the loop that follows a shim."""
        self._spawn = spawn
        tasks_root = self.root / "tasks"
        if not tasks_root.exists():
            return
        for ns_dir in sorted(tasks_root.iterdir()):
            for task_dir in sorted(ns_dir.iterdir()):
                if (task_dir / "shim.json").exists():
                    await self._adopt(ns_dir.name, task_dir.name, task_dir)

    async def _adopt(self, namespace: str, task_id: str, task_dir: Path) -> None:
        config = json.loads((task_dir / "shim.json").read_text())
        task = Task(namespace, task_id, task_dir, ShimClient(config["socket"]))
        self.tasks[(namespace, task_id)] = task
        try:
            await task.shim.call("state", timeout=5)
        except (Unavailable, OSError):
            task.gone = True
            await self._report_orphan_exit(task)
            return
        self._follow(task)
        log.info("reconnected to the shim of %s/%s", namespace, task_id)

    async def _report_orphan_exit(self, task: Task) -> None:
        """The shim is gone: its exit record (or 255, as containerd says) is the last word."""
        record = task.dir / "exit"
        if record.exists():
            doc = json.loads(record.read_text())
        else:
            doc = {"pid": 0, "status": 255, "exited_at": time.time_ns()}
        state = ProcessState(
            "", int(doc["pid"]), "stopped", int(doc["status"]), int(doc["exited_at"])
        )
        await self._on_exit(task, state)

    async def _watch(self, task: Task) -> None:
        try:
            async for event in task.shim.events():
                if event["type"] == "exit":
                    await self._on_exit(
                        task,
                        ProcessState.from_shim(
                            {**event, "exit_status": event["status"], "status": "stopped"}
                        ),
                    )
                elif event["type"] == "oom":
                    self.outbox.put(
                        "/tasks/oom",
                        events.TaskOOM(container_id=task.id),
                        namespace=task.namespace,
                    )
        except (OSError, ValueError):
            pass
        # The shim went away. After a delete that is expected; otherwise report its end.
        if (task.namespace, task.id) in self.tasks and not task.exit_future("").done():
            task.gone = True
            await self._report_orphan_exit(task)

    async def _on_exit(self, task: Task, state: ProcessState) -> None:
        future = task.exit_future(state.exec_id)
        if future.done():
            return
        future.set_result(state)
        marker = task.dir / (
            "exit.reported" if not state.exec_id else f"{state.exec_id}.exit.reported"
        )
        if marker.exists():
            return  # announced before a restart of this service
        self.outbox.put(
            "/tasks/exit",
            events.TaskExit(
                container_id=task.id,
                id=state.exec_id or task.id,
                pid=state.pid,
                exit_status=state.exit_status,
                exited_at=timestamp(state.exited_at),
            ),
            namespace=task.namespace,
        )
        if not state.exec_id:
            with contextlib.suppress(OSError):
                marker.write_text("")

    # -- create ------------------------------------------------------------

    def _runtime(
        self, container: Container, options: runc_options.Options, runtime_path: str
    ) -> tuple[str, list[str]]:
        if runtime_path:
            binary = runtime_path
        elif container.runtime_name in RUNC_RUNTIMES or container.runtime_name.endswith(".runc.v2"):
            binary = options.binary_name or self.default_binary
        else:
            raise NotFound(
                f"runtime {container.runtime_name!r} is not installed (berth runs runc and crun)"
            )
        found = shutil.which(binary, path=f"{TOOLS_BIN}:{os.environ.get('PATH', '')}")
        if found is None:
            raise NotFound(f"runtime binary {binary!r} not found")
        args = ["--systemd-cgroup"] if options.systemd_cgroup else []
        name = os.path.basename(binary)
        if name.startswith("runc") and self.criu:
            args += ["--criu", self.criu]  # runc's global flag: the criu that works here
        return found, args

    def _write_bundle(self, bundle: Path, container: Container) -> dict[str, Any]:
        spec = typeurl.unpack_json(
            _any(container.spec.type_url, container.spec.value), typeurl.OCI_SPEC
        )
        if not isinstance(spec, dict):
            raise InvalidArgument(f"container {container.id}: the spec is not a JSON object")
        # As containerd: the client's root path stands (`ctr run --rootfs DIR` gives an
        # absolute one and no mounts); rootfs mounts land in <bundle>/rootfs.
        spec.setdefault("root", {}).setdefault("path", "rootfs")
        process = spec.get("process") or {}
        if "oomScoreAdj" in process:
            # Without CAP_SYS_RESOURCE a score below ours cannot be set (containerd's
            # restrict_oom_score_adj).
            process["oomScoreAdj"] = max(int(process["oomScoreAdj"]), _own_oom_score_adj())
        (bundle / "config.json").write_text(json.dumps(spec))
        return spec

    async def create(
        self,
        namespace: str,
        container_id: str,
        rootfs: Sequence[Mount],
        stdio: Mapping[str, Any],
        options_any: Any = None,
        runtime_path: str = "",
        checkpoint_image: Descriptor | None = None,
    ) -> Task:
        if (namespace, container_id) in self.tasks:
            raise AlreadyExists(f"task {container_id}: already exists")
        container = await asyncio.to_thread(self._container, namespace, container_id)
        options = _runc_options(container.runtime_options)
        if options_any is not None and options_any.type_url:
            options.MergeFrom(_runc_options(options_any))
        binary, runtime_args = self._runtime(container, options, runtime_path)
        bundle = self.task_dir(namespace, container_id)
        if bundle.exists():
            raise AlreadyExists(f"task {container_id}: its directory {bundle} is still there")
        bundle.mkdir(parents=True, mode=0o711)
        task = Task(
            namespace,
            container_id,
            bundle,
            # Unique per task instance: a shim that is still going away must never
            # remove the socket of the next task with the same name.
            ShimClient(
                str(self.sockets / f"{_short(namespace, container_id, secrets.token_hex(8))}.sock")
            ),
        )
        self.tasks[(namespace, container_id)] = task
        mounted = False
        checkpoint_dir = ""
        try:
            if checkpoint_image is not None:
                # Kept in the bundle until start() restores from it, and removed with it.
                checkpoint_dir = str(await self._unpack_checkpoint(checkpoint_image, bundle))
            await asyncio.to_thread(self._write_bundle, bundle, container)
            (bundle / "rootfs").mkdir(mode=0o755)
            if rootfs:
                await asyncio.to_thread(mounting.mount_all, rootfs, str(bundle / "rootfs"))
                mounted = True
            runtime_root = options.root or str(self.root / "runc" / namespace)
            shim_config = {
                "id": container_id,
                "namespace": namespace,
                "bundle": str(bundle),
                "socket": task.shim.socket_path,
                "console_dir": str(self.sockets),
                "runtime": binary,
                "runtime_root": runtime_root,
                "runtime_args": runtime_args,
                "criu": self.criu,
                "stdio": dict(stdio),
            }
            (bundle / "shim.json").write_text(json.dumps(shim_config))
            await self._start_shim(task)
            self._follow(task)
            reply = await task.shim.call(
                "create", checkpoint=checkpoint_dir, no_pivot=options.no_pivot_root
            )
        except BaseException:
            self.tasks.pop((namespace, container_id), None)
            with contextlib.suppress(Exception):
                await task.shim.call("delete", timeout=10)
            if mounted:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(mounting.unmount_all, str(bundle / "rootfs"))
            await asyncio.to_thread(shutil.rmtree, bundle, True)
            raise
        pid = int(reply["pid"])
        self.outbox.put(
            "/tasks/create",
            events.TaskCreate(
                container_id=container_id,
                bundle=str(bundle),
                rootfs=[
                    mount_pb2.Mount(
                        type=m.type, source=m.source, target=m.target, options=list(m.options)
                    )
                    for m in rootfs
                ],
                io=events.TaskIO(
                    stdin=stdio.get("stdin", ""),
                    stdout=stdio.get("stdout", ""),
                    stderr=stdio.get("stderr", ""),
                    terminal=bool(stdio.get("terminal")),
                ),
                checkpoint=checkpoint_dir,
                pid=pid,
            ),
            namespace=namespace,
        )
        return task

    def _container(self, namespace: str, container_id: str) -> Container:
        from shared import context as request_context

        with request_context.using(namespace=namespace):
            return self.containers.get(container_id)

    async def _start_shim(self, task: Task) -> None:
        await self.shims.start(task.dir)
        deadline = time.monotonic() + 10
        while not os.path.exists(task.shim.socket_path):
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the shim for {task.id} did not come up; see {task.dir / 'shim.log'}"
                )
            await asyncio.sleep(0.005)

    # -- the rest of the lifecycle ------------------------------------------

    async def start(self, task: Task, exec_id: str) -> int:
        async with task.lock:
            reply = await task.shim.call("start", exec_id=exec_id)
        pid = int(reply["pid"])
        if exec_id:
            self.outbox.put(
                "/tasks/exec-started",
                events.TaskExecStarted(container_id=task.id, exec_id=exec_id, pid=pid),
                namespace=task.namespace,
            )
        else:
            self.outbox.put(
                "/tasks/start",
                events.TaskStart(container_id=task.id, pid=pid),
                namespace=task.namespace,
            )
        return pid

    async def state(self, task: Task, exec_id: str = "") -> ProcessState:
        if task.gone:
            future = task.exit_future(exec_id)
            if future.done():
                return future.result()
            raise NotFound(f"process {exec_id or task.id}: not found")
        return ProcessState.from_shim(await task.shim.call("state", exec_id=exec_id))

    async def wait(self, task: Task, exec_id: str = "") -> ProcessState:
        future = task.exit_future(exec_id)
        if not future.done() and not task.gone:
            current = await self.state(task, exec_id)  # NotFound for an unknown exec
            if current.status == "stopped":
                return current
        return await asyncio.shield(future)

    async def kill(self, task: Task, exec_id: str, signal: int, all_processes: bool) -> None:
        if task.gone:
            raise NotFound(f"task {task.id} is not running")
        await task.shim.call("kill", exec_id=exec_id, signal=signal, all=all_processes)

    async def delete(self, task: Task, exec_id: str = "") -> ProcessState:
        async with task.lock:
            if exec_id:
                state = ProcessState.from_shim(await task.shim.call("delete", exec_id=exec_id))
                task.exits.pop(exec_id, None)
                return state
            if task.gone:
                state = await task.exit_future("")
            else:
                state = ProcessState.from_shim(await task.shim.call("delete"))
            self.tasks.pop((task.namespace, task.id), None)
            rootfs = task.dir / "rootfs"
            with contextlib.suppress(OSError):
                await asyncio.to_thread(mounting.unmount_all, str(rootfs))
            await asyncio.to_thread(shutil.rmtree, task.dir, True)
        self.outbox.put(
            "/tasks/delete",
            events.TaskDelete(
                container_id=task.id,
                pid=state.pid,
                exit_status=state.exit_status,
                exited_at=timestamp(state.exited_at),
                id=task.id,
            ),
            namespace=task.namespace,
        )
        return state

    async def exec(self, task: Task, exec_id: str, spec: Any, stdio: Mapping[str, Any]) -> None:
        if not exec_id:
            raise InvalidArgument("exec id must not be empty")
        if task.gone:
            raise FailedPrecondition(f"task {task.id} is not running")
        await task.shim.call("exec", exec_id=exec_id, spec=spec, stdio=dict(stdio))
        self.outbox.put(
            "/tasks/exec-added",
            events.TaskExecAdded(container_id=task.id, exec_id=exec_id),
            namespace=task.namespace,
        )

    async def checkpoint(
        self, task: Task, options: runc_options.CheckpointOptions
    ) -> list[Descriptor]:
        """Dump the task with criu; into ``options.image_path`` or into the content store."""
        if task.gone:
            raise FailedPrecondition(f"task {task.id} is not running")
        if not self.criu:
            raise FailedPrecondition("checkpoints need criu, and none is installed")
        work = self.root / "checkpoints" / secrets.token_hex(8)
        image_dir = Path(options.image_path) if options.image_path else work / "image"
        image_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with task.lock:
                await task.shim.call(
                    "checkpoint",
                    timeout=600,
                    path=str(image_dir),
                    work_path=options.work_path or str(work),
                    exit=options.exit,
                    open_tcp=options.open_tcp,
                    external_unix_sockets=options.external_unix_sockets,
                    terminal=options.terminal,
                    file_locks=options.file_locks,
                )
            descriptors: list[Descriptor] = []
            if not options.image_path:
                if self.content is None:
                    raise FailedPrecondition("no content store to keep the checkpoint in")
                container = await asyncio.to_thread(self._container, task.namespace, task.id)
                descriptors.append(
                    await asyncio.to_thread(checkpoint.store_image_dir, self.content, image_dir)
                )
                descriptors.append(
                    await asyncio.to_thread(checkpoint.store_spec, self.content, container.spec)
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        self.outbox.put(
            "/tasks/checkpointed",
            events.TaskCheckpointed(
                container_id=task.id, checkpoint=str(image_dir) if options.image_path else ""
            ),
            namespace=task.namespace,
        )
        return descriptors

    async def _unpack_checkpoint(self, desc: Descriptor, bundle: Path) -> Path:
        """A restore's criu images, unpacked from the content store into the bundle."""
        if self.content is None:
            raise FailedPrecondition("no content store to read the checkpoint from")
        target = bundle / "checkpoint"
        await asyncio.to_thread(checkpoint.extract_image_dir, self.content, desc, target)
        return target

    async def call(self, task: Task, op: str, **args: Any) -> dict[str, Any]:
        if task.gone:
            raise FailedPrecondition(f"task {task.id} is not running")
        return await task.shim.call(op, **args)

    def list(self, namespace: str) -> list[Task]:
        return [t for (ns, _), t in sorted(self.tasks.items()) if ns == namespace]


def _any(type_url: str, value: bytes) -> Any:
    from google.protobuf import any_pb2

    return any_pb2.Any(type_url=type_url, value=value)
