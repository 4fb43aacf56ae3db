"""``Containers`` and ``Tasks`` over the container records and the task manager."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2

from services.runtime.container_store import ContainerRecords
from services.runtime.metrics import metrics_for
from services.runtime.tasks import ProcessState, Task, TaskManager
from shared import context as request_context
from shared import typeurl
from shared.api.containerd.events import container_pb2 as container_events
from shared.api.containerd.events import task_pb2 as task_events
from shared.api.containerd.runc.options import oci_pb2 as runc_options
from shared.api.containerd.services.containers.v1 import containers_pb2 as c_api
from shared.api.containerd.services.containers.v1 import containers_pb2_grpc
from shared.api.containerd.services.tasks.v1 import tasks_pb2 as t_api
from shared.api.containerd.services.tasks.v1 import tasks_pb2_grpc
from shared.api.containerd.types.task import task_pb2
from shared.containers import AnyValue, Container
from shared.diff import Descriptor
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.events.outbox import Outbox
from shared.pbutil import timestamp
from shared.proxy.diff import descriptor_from_proto, descriptor_to_proto
from shared.proxy.snapshots import mount_from_proto

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS = {
    "created": task_pb2.CREATED,
    "running": task_pb2.RUNNING,
    "stopped": task_pb2.STOPPED,
    "paused": task_pb2.PAUSED,
    "pausing": task_pb2.PAUSING,
}


def _any_value(msg: any_pb2.Any) -> AnyValue:
    return AnyValue(msg.type_url, msg.value)


def _any(value: AnyValue) -> any_pb2.Any:
    return any_pb2.Any(type_url=value.type_url, value=value.value)


def container_to_proto(c: Container) -> c_api.Container:
    return c_api.Container(
        id=c.id,
        labels=dict(c.labels),
        image=c.image,
        runtime=c_api.Container.Runtime(name=c.runtime_name, options=_any(c.runtime_options)),
        spec=_any(c.spec),
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created_at=timestamp(c.created_at),
        updated_at=timestamp(c.updated_at),
        extensions={k: _any(v) for k, v in c.extensions.items()},
        sandbox=c.sandbox,
    )


def container_from_proto(msg: c_api.Container) -> Container:
    return Container(
        id=msg.id,
        runtime_name=msg.runtime.name,
        runtime_options=_any_value(msg.runtime.options),
        spec=_any_value(msg.spec),
        image=msg.image,
        labels=dict(msg.labels),
        snapshotter=msg.snapshotter,
        snapshot_key=msg.snapshot_key,
        extensions={k: _any_value(v) for k, v in msg.extensions.items()},
        sandbox=msg.sandbox,
    )


class ContainersServicer(containers_pb2_grpc.ContainersServicer):
    def __init__(self, records: ContainerRecords, tasks: TaskManager, outbox: Outbox) -> None:
        self._records = records
        self._tasks = tasks
        self._outbox = outbox

    async def Get(
        self, request: c_api.GetContainerRequest, context: Context
    ) -> c_api.GetContainerResponse:
        c = await asyncio.to_thread(self._records.get, request.id)
        return c_api.GetContainerResponse(container=container_to_proto(c))

    async def List(
        self, request: c_api.ListContainersRequest, context: Context
    ) -> c_api.ListContainersResponse:
        found = await asyncio.to_thread(self._records.list, list(request.filters))
        return c_api.ListContainersResponse(containers=[container_to_proto(c) for c in found])

    async def ListStream(
        self, request: c_api.ListContainersRequest, context: Context
    ) -> AsyncIterator[c_api.ListContainerMessage]:
        for c in await asyncio.to_thread(self._records.list, list(request.filters)):
            yield c_api.ListContainerMessage(container=container_to_proto(c))

    async def Create(
        self, request: c_api.CreateContainerRequest, context: Context
    ) -> c_api.CreateContainerResponse:
        c = await asyncio.to_thread(self._records.create, container_from_proto(request.container))
        self._outbox.put(
            "/containers/create",
            container_events.ContainerCreate(
                id=c.id,
                image=c.image,
                runtime=container_events.ContainerCreate.Runtime(
                    name=c.runtime_name, options=_any(c.runtime_options)
                ),
            ),
        )
        return c_api.CreateContainerResponse(container=container_to_proto(c))

    async def Update(
        self, request: c_api.UpdateContainerRequest, context: Context
    ) -> c_api.UpdateContainerResponse:
        c = await asyncio.to_thread(
            self._records.update,
            container_from_proto(request.container),
            list(request.update_mask.paths),
        )
        self._outbox.put(
            "/containers/update",
            container_events.ContainerUpdate(
                id=c.id, image=c.image, labels=dict(c.labels), snapshot_key=c.snapshot_key
            ),
        )
        return c_api.UpdateContainerResponse(container=container_to_proto(c))

    async def Delete(
        self, request: c_api.DeleteContainerRequest, context: Context
    ) -> empty_pb2.Empty:
        namespace = request_context.require_namespace()
        if (namespace, request.id) in self._tasks.tasks:
            raise FailedPrecondition(f"container {request.id} has a task: delete the task first")
        await asyncio.to_thread(self._records.delete, request.id)
        self._outbox.put("/containers/delete", container_events.ContainerDelete(id=request.id))
        return empty_pb2.Empty()


def process_to_proto(task: Task, state: ProcessState) -> task_pb2.Process:
    return task_pb2.Process(
        id=state.exec_id or task.id,
        pid=state.pid,
        status=_STATUS.get(state.status, task_pb2.UNKNOWN),
        stdin=state.stdin,
        stdout=state.stdout,
        stderr=state.stderr,
        terminal=state.terminal,
        exit_status=state.exit_status,
        exited_at=timestamp(state.exited_at) if state.exited_at else None,
    )


class TasksServicer(tasks_pb2_grpc.TasksServicer):
    def __init__(self, tasks: TaskManager) -> None:
        self._tasks = tasks

    def _task(self, container_id: str) -> Task:
        return self._tasks.get(request_context.require_namespace(), container_id)

    async def Create(
        self, request: t_api.CreateTaskRequest, context: Context
    ) -> t_api.CreateTaskResponse:
        namespace = request_context.require_namespace()
        checkpoint = None
        if request.HasField("checkpoint") and request.checkpoint.digest:
            checkpoint = descriptor_from_proto(request.checkpoint)
        task = await self._create(namespace, request, checkpoint)
        state = await self._tasks.state(task)
        return t_api.CreateTaskResponse(container_id=task.id, pid=state.pid)

    async def _create(
        self, namespace: str, request: t_api.CreateTaskRequest, checkpoint: Descriptor | None
    ) -> Task:
        return await self._tasks.create(
            namespace,
            request.container_id,
            [mount_from_proto(m) for m in request.rootfs],
            {
                "stdin": request.stdin,
                "stdout": request.stdout,
                "stderr": request.stderr,
                "terminal": request.terminal,
            },
            request.options if request.HasField("options") else None,
            request.runtime_path,
            checkpoint,
        )

    async def Start(self, request: t_api.StartRequest, context: Context) -> t_api.StartResponse:
        pid = await self._tasks.start(self._task(request.container_id), request.exec_id)
        return t_api.StartResponse(pid=pid)

    async def Delete(
        self, request: t_api.DeleteTaskRequest, context: Context
    ) -> t_api.DeleteResponse:
        state = await self._tasks.delete(self._task(request.container_id))
        return t_api.DeleteResponse(
            id=request.container_id, pid=state.pid, exit_status=state.exit_status,
            exited_at=timestamp(state.exited_at),
        )  # fmt: skip

    async def DeleteProcess(
        self, request: t_api.DeleteProcessRequest, context: Context
    ) -> t_api.DeleteResponse:
        if not request.exec_id:
            raise InvalidArgument("exec id must not be empty")
        state = await self._tasks.delete(self._task(request.container_id), request.exec_id)
        return t_api.DeleteResponse(
            id=request.exec_id, pid=state.pid, exit_status=state.exit_status,
            exited_at=timestamp(state.exited_at),
        )  # fmt: skip

    async def Get(self, request: t_api.GetRequest, context: Context) -> t_api.GetResponse:
        task = self._task(request.container_id)
        state = await self._tasks.state(task, request.exec_id)
        return t_api.GetResponse(process=process_to_proto(task, state))

    async def List(
        self, request: t_api.ListTasksRequest, context: Context
    ) -> t_api.ListTasksResponse:
        namespace = request_context.require_namespace()
        found = []
        for task in self._tasks.list(namespace):
            try:
                found.append(process_to_proto(task, await self._tasks.state(task)))
            except NotFound:
                continue
        return t_api.ListTasksResponse(tasks=found)

    async def Kill(self, request: t_api.KillRequest, context: Context) -> empty_pb2.Empty:
        await self._tasks.kill(
            self._task(request.container_id), request.exec_id, request.signal, request.all
        )
        return empty_pb2.Empty()

    async def Exec(self, request: t_api.ExecProcessRequest, context: Context) -> empty_pb2.Empty:
        spec = typeurl.unpack_json(request.spec, typeurl.OCI_PROCESS)
        stdio = {"stdin": request.stdin, "stdout": request.stdout, "stderr": request.stderr,
                 "terminal": request.terminal}  # fmt: skip
        await self._tasks.exec(self._task(request.container_id), request.exec_id, spec, stdio)
        return empty_pb2.Empty()

    async def ResizePty(self, request: t_api.ResizePtyRequest, context: Context) -> empty_pb2.Empty:
        await self._tasks.call(self._task(request.container_id), "resize", exec_id=request.exec_id,
                               width=request.width, height=request.height)  # fmt: skip
        return empty_pb2.Empty()

    async def CloseIO(self, request: t_api.CloseIORequest, context: Context) -> empty_pb2.Empty:
        task = self._task(request.container_id)
        await self._tasks.call(task, "close_io", exec_id=request.exec_id, stdin=request.stdin)
        return empty_pb2.Empty()

    async def Pause(self, request: t_api.PauseTaskRequest, context: Context) -> empty_pb2.Empty:
        task = self._task(request.container_id)
        await self._tasks.call(task, "pause")
        self._tasks.outbox.put("/tasks/paused", task_events.TaskPaused(container_id=task.id))
        return empty_pb2.Empty()

    async def Resume(self, request: t_api.ResumeTaskRequest, context: Context) -> empty_pb2.Empty:
        task = self._task(request.container_id)
        await self._tasks.call(task, "resume")
        self._tasks.outbox.put("/tasks/resumed", task_events.TaskResumed(container_id=task.id))
        return empty_pb2.Empty()

    async def ListPids(
        self, request: t_api.ListPidsRequest, context: Context
    ) -> t_api.ListPidsResponse:
        reply = await self._tasks.call(self._task(request.container_id), "pids")
        processes = []
        for p in reply["processes"]:
            info = task_pb2.ProcessInfo(pid=p["pid"])
            if p.get("exec_id"):
                info.info.CopyFrom(typeurl.pack(runc_options.ProcessDetails(exec_id=p["exec_id"])))
            processes.append(info)
        return t_api.ListPidsResponse(processes=processes)

    async def Update(self, request: t_api.UpdateTaskRequest, context: Context) -> empty_pb2.Empty:
        resources = typeurl.unpack_json(request.resources, typeurl.OCI_LINUX_RESOURCES)
        await self._tasks.call(self._task(request.container_id), "update", resources=resources)
        return empty_pb2.Empty()

    async def Metrics(
        self, request: t_api.MetricsRequest, context: Context
    ) -> t_api.MetricsResponse:
        namespace = request_context.require_namespace()
        from shared import filters

        match = filters.parse_all(list(request.filters))
        metrics = []
        for task in self._tasks.list(namespace):
            if not match.match(filters.FieldsAdaptor({"id": task.id})):
                continue
            try:
                reply = await self._tasks.call(task, "stats")
            except (FailedPrecondition, NotFound):
                continue
            metrics.append(metrics_for(task.id, reply["stats"]))
        return t_api.MetricsResponse(metrics=metrics)

    async def Wait(self, request: t_api.WaitRequest, context: Context) -> t_api.WaitResponse:
        state = await self._tasks.wait(self._task(request.container_id), request.exec_id)
        return t_api.WaitResponse(
            exit_status=state.exit_status, exited_at=timestamp(state.exited_at)
        )

    async def Checkpoint(
        self, request: t_api.CheckpointTaskRequest, context: Context
    ) -> t_api.CheckpointTaskResponse:
        options = runc_options.CheckpointOptions()
        if request.options.type_url:
            options = typeurl.unpack_as(request.options, runc_options.CheckpointOptions)
        descriptors = await self._tasks.checkpoint(self._task(request.container_id), options)
        return t_api.CheckpointTaskResponse(
            descriptors=[descriptor_to_proto(d) for d in descriptors]
        )


def _json(value: object) -> str:
    return json.dumps(value)
