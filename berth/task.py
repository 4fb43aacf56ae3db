"""Tasks and processes: what runs from a container.

A task is the container's init process, run by the container's shim; a
:class:`Process` is one more process exec'd in it. As with containerd, ask for
the exit status *before* starting, so an early exit is not missed::

    task = container.new_task(berth.cio.stdio())
    exited = task.wait()          # the Wait call is on its way
    task.start()
    status = exited.result()      # ExitStatus(code=0, exited_at=...)
    task.delete()
"""

from __future__ import annotations

import contextlib
import enum
import signal as signals
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message

from berth.cio import IO, Creator, null_io
from shared import typeurl
from shared.api.containerd.runc.options import oci_pb2 as runc_options
from shared.api.containerd.services.tasks.v1 import tasks_pb2
from shared.api.containerd.types.task import task_pb2
from shared.errors import FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:
    from berth.client import Client
    from berth.image import Image

IO_DRAIN_TIMEOUT = 60.0  # after the exit, for the shim to hand over the last output


class Status(enum.Enum):
    """A process's state (containerd's ``ProcessStatus``)."""

    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"


_STATUS = {
    task_pb2.UNKNOWN: Status.UNKNOWN,
    task_pb2.CREATED: Status.CREATED,
    task_pb2.RUNNING: Status.RUNNING,
    task_pb2.STOPPED: Status.STOPPED,
    task_pb2.PAUSED: Status.PAUSED,
    task_pb2.PAUSING: Status.PAUSING,
}


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: its exit code (128 + n when killed by signal n) and when."""

    code: int
    exited_at: datetime | None = None


@dataclass(frozen=True)
class ProcessState:
    status: Status
    exit_status: int = 0
    exited_at: datetime | None = None


@dataclass(frozen=True)
class TaskInfo:
    """A task as listed (``client.tasks()``): its container, init pid and state; a stopped
    task has its exit status."""

    container_id: str
    pid: int
    status: Status
    exit_status: int = 0
    exited_at: datetime | None = None


def list_tasks(client: Client) -> list[TaskInfo]:
    from berth.client import to_datetime

    reply = client.api.tasks.List(tasks_pb2.ListTasksRequest())
    return [
        TaskInfo(
            # containerd names a listed task by its id (its container's); some set both.
            p.container_id or p.id,
            p.pid,
            _STATUS.get(p.status, Status.UNKNOWN),
            p.exit_status,
            to_datetime(p.exited_at),
        )
        for p in reply.tasks
    ]


@dataclass(frozen=True)
class ProcessInfo:
    """A process of a task: its host pid and, for an exec'd one, the exec id."""

    pid: int
    exec_id: str = ""


class ExitWaiter:
    """A Wait call in flight; :meth:`result` blocks until the process has exited."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> ExitStatus:
        """The exit status; TimeoutError if the process still runs after ``timeout``."""
        from berth.client import to_datetime

        try:
            reply = self._future.result(timeout)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"still running after {timeout}s") from None
        return ExitStatus(reply.exit_status, to_datetime(reply.exited_at))

    def done(self) -> bool:
        return bool(self._future.done())

    def cancel(self) -> None:
        self._future.cancel()


class Process:
    """A process exec'd in a task (``task.exec``)."""

    def __init__(
        self, client: Client, container_id: str, exec_id: str, io: IO | None, pid: int = 0
    ) -> None:
        self.client = client
        self.container_id = container_id
        self.exec_id = exec_id
        self.io = io
        self.pid = pid

    @property
    def id(self) -> str:
        return self.exec_id or self.container_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, pid={self.pid})"

    def start(self) -> int:
        """Start the process; returns its pid."""
        reply = self.client.api.tasks.Start(
            tasks_pb2.StartRequest(container_id=self.container_id, exec_id=self.exec_id)
        )
        self.pid = reply.pid
        return self.pid

    def wait(self) -> ExitWaiter:
        """Start waiting for the exit (call before :meth:`start`, as with containerd)."""
        request = tasks_pb2.WaitRequest(container_id=self.container_id, exec_id=self.exec_id)
        return ExitWaiter(self.client.api.tasks.Wait.future(request))

    def kill(self, signal: int | str = signals.SIGTERM, *, all: bool = False) -> None:
        """Send ``signal`` (number or name, ``"SIGKILL"``); ``all`` to every process of the
        task."""
        number = signals.Signals[signal].value if isinstance(signal, str) else int(signal)
        self.client.api.tasks.Kill(
            tasks_pb2.KillRequest(
                container_id=self.container_id, exec_id=self.exec_id, signal=number, all=all
            )
        )

    def state(self) -> ProcessState:
        from berth.client import to_datetime

        reply = self.client.api.tasks.Get(
            tasks_pb2.GetRequest(container_id=self.container_id, exec_id=self.exec_id)
        )
        p = reply.process
        return ProcessState(
            _STATUS.get(p.status, Status.UNKNOWN), p.exit_status, to_datetime(p.exited_at)
        )

    def status(self) -> Status:
        return self.state().status

    def resize(self, width: int, height: int) -> None:
        """Resize the process's terminal."""
        self.client.api.tasks.ResizePty(
            tasks_pb2.ResizePtyRequest(
                container_id=self.container_id, exec_id=self.exec_id, width=width, height=height
            )
        )

    def close_io(self, *, stdin: bool = True) -> None:
        """Close the process's stdin (it reads the end of input)."""
        self.client.api.tasks.CloseIO(
            tasks_pb2.CloseIORequest(
                container_id=self.container_id, exec_id=self.exec_id, stdin=stdin
            )
        )

    def _check_deletable(self, force: bool) -> None:
        if force:
            waiter = self.wait()
            with contextlib.suppress(NotFound):
                self.kill(signals.SIGKILL, all=not self.exec_id)
            waiter.result()
        state = self.state()
        # A task created for a restore and never started has no process yet.
        if state.status in (Status.STOPPED, Status.UNKNOWN) or (
            state.status is Status.CREATED and self.pid == 0
        ):
            return
        raise FailedPrecondition(
            f"{self.id} must be stopped before deletion: it is {state.status.value}"
        )

    def _drain_io(self) -> None:
        if self.io is not None:
            self.io.cancel()
            self.io.wait(IO_DRAIN_TIMEOUT)

    def delete(self, *, force: bool = False) -> ExitStatus:
        """Remove the exited process; ``force`` kills it first. Its output is copied to the
        end first, then its FIFOs go."""
        from berth.client import to_datetime

        self._check_deletable(force)
        self._drain_io()
        reply = self.client.api.tasks.DeleteProcess(
            tasks_pb2.DeleteProcessRequest(container_id=self.container_id, exec_id=self.exec_id)
        )
        if self.io is not None:
            self.io.close()
        return ExitStatus(reply.exit_status, to_datetime(reply.exited_at))


class Task(Process):
    """A container's task: its init process (``container.new_task``)."""

    def __init__(self, client: Client, container_id: str, io: IO | None, pid: int = 0) -> None:
        super().__init__(client, container_id, "", io, pid)

    def delete(self, *, force: bool = False) -> ExitStatus:
        """Remove the exited task (``force`` kills it first); returns how it ended."""
        from berth.client import to_datetime

        self._check_deletable(force)
        self._drain_io()
        reply = self.client.api.tasks.Delete(
            tasks_pb2.DeleteTaskRequest(container_id=self.container_id)
        )
        if self.io is not None:
            self.io.close()
        return ExitStatus(reply.exit_status, to_datetime(reply.exited_at))

    def exec(
        self,
        exec_id: str,
        process: dict[str, Any] | None = None,
        io: Creator | None = None,
        *,
        args: list[str] | None = None,
        terminal: bool = False,
    ) -> Process:
        """Create (not start) process ``exec_id`` in the task. ``process`` is an OCI process
        spec; by default the container's, with ``args`` and ``terminal`` (as
        ``ctr tasks exec``)."""
        if process is None:
            from berth.container import Container

            spec = Container(self.client, self.container_id).spec()
            process = dict(spec.get("process") or {})
            if args is not None:
                process["args"] = list(args)
            process["terminal"] = terminal
        if not process.get("args"):
            raise InvalidArgument(f"exec {exec_id}: the process needs args")
        process_io = (io or null_io())(exec_id)
        try:
            self.client.api.tasks.Exec(
                tasks_pb2.ExecProcessRequest(
                    container_id=self.container_id,
                    exec_id=exec_id,
                    stdin=process_io.config.stdin,
                    stdout=process_io.config.stdout,
                    stderr=process_io.config.stderr,
                    terminal=process_io.config.terminal,
                    spec=typeurl.pack_json(typeurl.OCI_PROCESS, process),
                )
            )
        except BaseException:
            process_io.close()
            raise
        return Process(self.client, self.container_id, exec_id, process_io)

    def load_process(self, exec_id: str, attach: Creator | None = None) -> Process:
        """An exec'd process of the task (NotFound if none)."""
        from berth.cio import IOConfig

        reply = self.client.api.tasks.Get(
            tasks_pb2.GetRequest(container_id=self.container_id, exec_id=exec_id)
        )
        p = reply.process
        process_io = None
        if attach is not None:
            process_io = attach.attach(IOConfig(p.stdin, p.stdout, p.stderr, p.terminal))
        return Process(self.client, self.container_id, exec_id, process_io, p.pid)

    def pause(self) -> None:
        self.client.api.tasks.Pause(tasks_pb2.PauseTaskRequest(container_id=self.container_id))

    def resume(self) -> None:
        self.client.api.tasks.Resume(tasks_pb2.ResumeTaskRequest(container_id=self.container_id))

    def pids(self) -> list[ProcessInfo]:
        """Every process of the task, exec'd ones with their exec id."""
        reply = self.client.api.tasks.ListPids(
            tasks_pb2.ListPidsRequest(container_id=self.container_id)
        )
        found = []
        for p in reply.processes:
            exec_id = ""
            if p.info.type_url:
                exec_id = typeurl.unpack_as(p.info, runc_options.ProcessDetails).exec_id
            found.append(ProcessInfo(p.pid, exec_id))
        return found

    def metrics(self) -> message.Message:
        """The task's cgroup statistics (``io.containerd.cgroups.v1/v2.Metrics``)."""
        # Importing the generated modules registers both types for decoding.
        from shared.api.containerd.cgroups.v1 import metrics_pb2 as v1
        from shared.api.containerd.cgroups.v2 import metrics_pb2 as v2

        del v1, v2

        reply = self.client.api.tasks.Metrics(
            tasks_pb2.MetricsRequest(filters=[f"id=={self.container_id}"])
        )
        if not reply.metrics:
            raise NotFound(f"no metrics for task {self.container_id}")
        return typeurl.unpack(reply.metrics[0].data)

    def update(self, resources: dict[str, Any]) -> None:
        """Change the task's resources (an OCI ``LinuxResources``: memory, cpu, pids ...)."""
        self.client.api.tasks.Update(
            tasks_pb2.UpdateTaskRequest(
                container_id=self.container_id,
                resources=typeurl.pack_json(typeurl.OCI_LINUX_RESOURCES, resources),
            )
        )

    def checkpoint(
        self,
        name: str | None = None,
        *,
        exit: bool = False,
        open_tcp: bool = False,
        external_unix_sockets: bool = False,
        terminal: bool = False,
        file_locks: bool = False,
    ) -> Image:
        """Checkpoint the task with criu into the image ``name`` (default
        ``containerd.io/checkpoint/<id>:<date>``): the dump, the spec, the image and the file
        changes, as containerd's ``task.Checkpoint`` builds it. The task is paused meanwhile,
        or ends with ``exit``. Push the image to move it; restore it with
        ``client.restore`` and ``container.new_task(checkpoint=...)``."""
        from berth.checkpoint import checkpoint_task

        options = runc_options.CheckpointOptions(
            exit=exit,
            open_tcp=open_tcp,
            external_unix_sockets=external_unix_sockets,
            terminal=terminal,
            file_locks=file_locks,
        )
        return checkpoint_task(self, name, options)
