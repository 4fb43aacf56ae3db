"""``runtime.v1.ImageService`` and ``runtime.v1.RuntimeService`` over the CRI core.

Blocking client calls run in threads. RPCs berth does not serve yet (the streaming
server's Exec, Attach and PortForward, stats, events) answer ``UNIMPLEMENTED``
saying so, as containerd 1.7 does for ``CheckpointContainer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from services.cri import events
from services.cri.images import Credentials, CriImage, CriImages, verbose_info
from services.cri.pods import ContainerState, ContainerStats, Pods, PodStats, SandboxState
from services.cri.stats import Usage
from services.cri.streaming import StreamingServer, check_exec_request
from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.api.cri.runtime.v1 import api_pb2_grpc
from shared.errors import BerthError, FailedPrecondition, InvalidArgument, Unimplemented
from shared.events.bus import EventBus
from shared.version import BERTH_VERSION

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)
T = TypeVar("T")

RUNTIME_NAME = "berth"
RUNTIME_API_VERSION = "v1"
# What kubelet's Version call gets for `version` (the CRI API's, as containerd answers).
KUBE_API_VERSION = "0.1.0"
STREAM_BATCH = 100


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def _batches(items: list[T]) -> Iterator[list[T]]:
    """A listing in messages of at most STREAM_BATCH entries (at least one message)."""
    if not items:
        yield []
    for start in range(0, len(items), STREAM_BATCH):
        yield items[start : start + STREAM_BATCH]


def image_to_proto(image: CriImage) -> cri.Image:
    msg = cri.Image(
        id=image.id,
        repo_tags=image.repo_tags,
        repo_digests=image.repo_digests,
        size=image.size,
        username=image.username,
        spec=cri.ImageSpec(image=image.id),
        pinned=image.pinned,
    )
    if image.uid is not None:
        msg.uid.value = image.uid
    return msg


def credentials_from_proto(auth: cri.AuthConfig) -> Credentials | None:
    if not auth.ByteSize():
        return None
    return Credentials(
        auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token
    )


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: CriImages) -> None:
        self._images = images

    async def ListImages(
        self, request: cri.ListImagesRequest, context: Context
    ) -> cri.ListImagesResponse:
        found = await _run(self._images.list, request.filter.image.image)
        return cri.ListImagesResponse(images=[image_to_proto(i) for i in found])

    async def StreamImages(
        self, request: cri.StreamImagesRequest, context: Context
    ) -> AsyncIterator[cri.StreamImagesResponse]:
        found = await _run(self._images.list, request.filter.image.image)
        for batch in _batches(found):
            yield cri.StreamImagesResponse(images=[image_to_proto(i) for i in batch])

    async def ImageStatus(
        self, request: cri.ImageStatusRequest, context: Context
    ) -> cri.ImageStatusResponse:
        found = await _run(self._images.status, request.image.image)
        if found is None:
            return cri.ImageStatusResponse()  # absent is no error in CRI
        info = verbose_info(found) if request.verbose else {}
        return cri.ImageStatusResponse(image=image_to_proto(found), info=info)

    async def PullImage(
        self, request: cri.PullImageRequest, context: Context
    ) -> cri.PullImageResponse:
        ref = await _run(
            self._images.pull, request.image.image, credentials_from_proto(request.auth)
        )
        return cri.PullImageResponse(image_ref=ref)

    async def RemoveImage(
        self, request: cri.RemoveImageRequest, context: Context
    ) -> cri.RemoveImageResponse:
        await _run(self._images.remove, request.image.image)
        return cri.RemoveImageResponse()

    async def ImageFsInfo(
        self, request: cri.ImageFsInfoRequest, context: Context
    ) -> cri.ImageFsInfoResponse:
        mountpoint, used, inodes = await _run(self._images.filesystem_usage)
        usage = cri.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=cri.FilesystemIdentifier(mountpoint=mountpoint),
            used_bytes=cri.UInt64Value(value=used),
            inodes_used=cri.UInt64Value(value=inodes),
        )
        return cri.ImageFsInfoResponse(image_filesystems=[usage])


def sandbox_to_proto(state: SandboxState) -> cri.PodSandbox:
    return cri.PodSandbox(
        id=state.id,
        metadata=state.config.metadata,
        state=cri.SANDBOX_READY if state.ready else cri.SANDBOX_NOTREADY,
        created_at=state.created_at,
        labels=state.config.labels,
        annotations=state.config.annotations,
    )


def sandbox_status_to_proto(state: SandboxState) -> cri.PodSandboxStatus:
    options = state.config.linux.security_context.namespace_options
    return cri.PodSandboxStatus(
        id=state.id,
        metadata=state.config.metadata,
        state=cri.SANDBOX_READY if state.ready else cri.SANDBOX_NOTREADY,
        created_at=state.created_at,
        network=cri.PodSandboxNetworkStatus(ip=state.ip),
        linux=cri.LinuxPodSandboxStatus(namespaces=cri.Namespace(options=options)),
        labels=state.config.labels,
        annotations=state.config.annotations,
    )


def container_to_proto(state: ContainerState) -> cri.Container:
    return cri.Container(
        id=state.id,
        pod_sandbox_id=state.sandbox_id,
        metadata=state.config.metadata,
        image=cri.ImageSpec(image=state.image_id or state.config.image.image),
        image_ref=state.image_id,
        image_id=state.image_id,
        state=state.state,  # type: ignore[arg-type]
        created_at=state.created_at,
        labels=state.config.labels,
        annotations=state.config.annotations,
    )


def container_status_to_proto(state: ContainerState) -> cri.ContainerStatus:
    return cri.ContainerStatus(
        id=state.id,
        metadata=state.config.metadata,
        state=state.state,  # type: ignore[arg-type]
        created_at=state.created_at,
        started_at=state.started_at,
        finished_at=state.finished_at,
        exit_code=state.exit_code,
        image=cri.ImageSpec(image=state.config.image.image),
        image_ref=state.image_id,
        image_id=state.image_id,
        reason=state.reason,
        labels=state.config.labels,
        annotations=state.config.annotations,
        mounts=state.config.mounts,
        log_path=state.log_path,
    )


def _u64(value: int) -> cri.UInt64Value:
    return cri.UInt64Value(value=value)


def cpu_to_proto(usage: Usage) -> cri.CpuUsage:
    msg = cri.CpuUsage(timestamp=usage.timestamp, usage_core_nano_seconds=_u64(usage.cpu_ns))
    if usage.nano_cores is not None:
        msg.usage_nano_cores.value = usage.nano_cores
    return msg


def memory_to_proto(usage: Usage) -> cri.MemoryUsage:
    msg = cri.MemoryUsage(
        timestamp=usage.timestamp,
        working_set_bytes=_u64(usage.working_set),
        usage_bytes=_u64(usage.memory_usage),
        rss_bytes=_u64(usage.rss),
        page_faults=_u64(usage.page_faults),
        major_page_faults=_u64(usage.major_page_faults),
    )
    if usage.memory_limit:
        msg.available_bytes.value = max(usage.memory_limit - usage.working_set, 0)
    return msg


def container_stats_to_proto(stats: ContainerStats) -> cri.ContainerStats:
    state = stats.state
    mountpoint, used, inodes = stats.writable_layer
    msg = cri.ContainerStats(
        attributes=cri.ContainerAttributes(
            id=state.id,
            metadata=state.config.metadata,
            labels=state.config.labels,
            annotations=state.config.annotations,
        ),
        writable_layer=cri.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=cri.FilesystemIdentifier(mountpoint=mountpoint),
            used_bytes=_u64(used),
            inodes_used=_u64(inodes),
        ),
    )
    if stats.usage is not None:
        msg.cpu.CopyFrom(cpu_to_proto(stats.usage))
        msg.memory.CopyFrom(memory_to_proto(stats.usage))
    return msg


def pod_stats_to_proto(stats: PodStats) -> cri.PodSandboxStats:
    sandbox, usage = stats.sandbox, stats.usage
    interfaces = [
        cri.NetworkInterfaceUsage(
            name=name,
            rx_bytes=_u64(rx),
            rx_errors=_u64(rx_errors),
            tx_bytes=_u64(tx),
            tx_errors=_u64(tx_errors),
        )
        for name, rx, rx_errors, tx, tx_errors in stats.network
    ]
    network = cri.NetworkUsage(timestamp=usage.timestamp, interfaces=interfaces)
    default = [i for i in interfaces if i.name == "eth0"] or interfaces[:1]
    if default:
        network.default_interface.CopyFrom(default[0])
    process = cri.ProcessUsage(timestamp=usage.timestamp, process_count=_u64(usage.processes))
    return cri.PodSandboxStats(
        attributes=cri.PodSandboxAttributes(
            id=sandbox.id,
            metadata=sandbox.config.metadata,
            labels=sandbox.config.labels,
            annotations=sandbox.config.annotations,
        ),
        linux=cri.LinuxPodSandboxStats(
            cpu=cpu_to_proto(usage),
            memory=memory_to_proto(usage),
            network=network,
            process=process,
            containers=[container_stats_to_proto(c) for c in stats.containers],
        ),
    )


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    """Version, Status, pod sandboxes and containers; streaming, stats and the rest
    answer UNIMPLEMENTED for now."""

    def __init__(
        self,
        pods: Pods,
        network_ready: Callable[[], tuple[bool, str]],
        bus: EventBus | None = None,
        streaming: StreamingServer | None = None,
    ) -> None:
        self._pods = pods
        self._network_ready = network_ready
        self._bus = bus
        self._streaming = streaming

    async def Exec(self, request: cri.ExecRequest, context: Context) -> cri.ExecResponse:
        if self._streaming is None:
            raise Unimplemented("CRI Exec: no streaming server")
        check_exec_request(request)
        state = await _run(self._pods.container_status, request.container_id)
        if state.state != cri.CONTAINER_RUNNING:
            raise FailedPrecondition(f"container {state.id} is not running")
        return cri.ExecResponse(url=self._streaming.exec_url(request))

    async def Attach(self, request: cri.AttachRequest, context: Context) -> cri.AttachResponse:
        if self._streaming is None:
            raise Unimplemented("CRI Attach: no streaming server")
        if not (request.stdin or request.stdout or request.stderr):
            raise InvalidArgument("one of stdin, stdout, or stderr must be set")
        if request.tty and request.stderr:
            raise InvalidArgument("tty and stderr cannot both be true")
        await _run(self._pods.attach_target, request)  # refuses what cannot be attached
        return cri.AttachResponse(url=self._streaming.attach_url(request))

    async def PortForward(
        self, request: cri.PortForwardRequest, context: Context
    ) -> cri.PortForwardResponse:
        if self._streaming is None:
            raise Unimplemented("CRI PortForward: no streaming server")
        state = await _run(self._pods.sandbox_status, request.pod_sandbox_id)
        if not state.ready:
            raise FailedPrecondition(f"pod sandbox {state.id} is not ready")
        for port in request.port:
            if not 0 < port < 65536:
                raise InvalidArgument(f"port {port} is not a port")
        return cri.PortForwardResponse(url=self._streaming.port_forward_url(request))

    async def GetContainerEvents(
        self, request: cri.GetEventsRequest, context: Context
    ) -> AsyncIterator[cri.ContainerEventResponse]:
        if self._bus is None:
            raise Unimplemented("CRI GetContainerEvents: no event bus")

        async def live() -> None:
            # Headers once the subscription is in place: a client that waits for them
            # misses nothing that happens afterwards (as berth's Events.Subscribe).
            await context.send_initial_metadata((("berth-subscribed", "1"),))

        async for envelope in self._bus.subscribe([events.FILTER], on_subscribed=live):
            event = events.lifecycle_event(envelope)
            if event is None:
                continue
            try:
                sandbox, containers = await _run(self._pods.event_statuses, event.container_id)
            except BerthError as e:
                # The event still goes out: kubelet relists what it cannot learn here.
                log.warning("statuses for the event of %s: %s", event.container_id, e)
                sandbox, containers = None, []
            reply = cri.ContainerEventResponse(
                container_id=event.container_id,
                container_event_type=event.kind,  # type: ignore[arg-type]
                created_at=event.created_at,
                containers_statuses=[container_status_to_proto(c) for c in containers],
            )
            if sandbox is not None:
                reply.pod_sandbox_status.CopyFrom(sandbox_status_to_proto(sandbox))
            yield reply

    async def RunPodSandbox(
        self, request: cri.RunPodSandboxRequest, context: Context
    ) -> cri.RunPodSandboxResponse:
        sandbox_id = await _run(self._pods.run_sandbox, request.config)
        return cri.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(
        self, request: cri.StopPodSandboxRequest, context: Context
    ) -> cri.StopPodSandboxResponse:
        await _run(self._pods.stop_sandbox, request.pod_sandbox_id)
        return cri.StopPodSandboxResponse()

    async def RemovePodSandbox(
        self, request: cri.RemovePodSandboxRequest, context: Context
    ) -> cri.RemovePodSandboxResponse:
        await _run(self._pods.remove_sandbox, request.pod_sandbox_id)
        return cri.RemovePodSandboxResponse()

    async def PodSandboxStatus(
        self, request: cri.PodSandboxStatusRequest, context: Context
    ) -> cri.PodSandboxStatusResponse:
        state = await _run(self._pods.sandbox_status, request.pod_sandbox_id)
        return cri.PodSandboxStatusResponse(
            status=sandbox_status_to_proto(state), timestamp=time.time_ns()
        )

    async def ListPodSandbox(
        self, request: cri.ListPodSandboxRequest, context: Context
    ) -> cri.ListPodSandboxResponse:
        found = await _run(self._pods.list_sandboxes, request.filter)
        return cri.ListPodSandboxResponse(items=[sandbox_to_proto(s) for s in found])

    async def CreateContainer(
        self, request: cri.CreateContainerRequest, context: Context
    ) -> cri.CreateContainerResponse:
        container_id = await _run(
            self._pods.create_container,
            request.pod_sandbox_id,
            request.config,
            request.sandbox_config,
        )
        return cri.CreateContainerResponse(container_id=container_id)

    async def StartContainer(
        self, request: cri.StartContainerRequest, context: Context
    ) -> cri.StartContainerResponse:
        await _run(self._pods.start_container, request.container_id)
        return cri.StartContainerResponse()

    async def StopContainer(
        self, request: cri.StopContainerRequest, context: Context
    ) -> cri.StopContainerResponse:
        await _run(self._pods.stop_container, request.container_id, request.timeout)
        return cri.StopContainerResponse()

    async def RemoveContainer(
        self, request: cri.RemoveContainerRequest, context: Context
    ) -> cri.RemoveContainerResponse:
        await _run(self._pods.remove_container, request.container_id)
        return cri.RemoveContainerResponse()

    async def ListContainers(
        self, request: cri.ListContainersRequest, context: Context
    ) -> cri.ListContainersResponse:
        found = await _run(self._pods.list_containers, request.filter)
        return cri.ListContainersResponse(containers=[container_to_proto(c) for c in found])

    async def ContainerStatus(
        self, request: cri.ContainerStatusRequest, context: Context
    ) -> cri.ContainerStatusResponse:
        state = await _run(self._pods.container_status, request.container_id)
        return cri.ContainerStatusResponse(status=container_status_to_proto(state))

    async def UpdateContainerResources(
        self, request: cri.UpdateContainerResourcesRequest, context: Context
    ) -> cri.UpdateContainerResourcesResponse:
        await _run(self._pods.update_resources, request.container_id, request.linux)
        return cri.UpdateContainerResourcesResponse()

    async def ContainerStats(
        self, request: cri.ContainerStatsRequest, context: Context
    ) -> cri.ContainerStatsResponse:
        stats = await _run(self._pods.container_stats, request.container_id)
        return cri.ContainerStatsResponse(stats=container_stats_to_proto(stats))

    async def ListContainerStats(
        self, request: cri.ListContainerStatsRequest, context: Context
    ) -> cri.ListContainerStatsResponse:
        found = await _run(self._pods.list_container_stats, request.filter)
        return cri.ListContainerStatsResponse(stats=[container_stats_to_proto(s) for s in found])

    async def PodSandboxStats(
        self, request: cri.PodSandboxStatsRequest, context: Context
    ) -> cri.PodSandboxStatsResponse:
        stats = await _run(self._pods.sandbox_stats, request.pod_sandbox_id)
        return cri.PodSandboxStatsResponse(stats=pod_stats_to_proto(stats))

    async def ListPodSandboxStats(
        self, request: cri.ListPodSandboxStatsRequest, context: Context
    ) -> cri.ListPodSandboxStatsResponse:
        found = await _run(self._pods.list_sandbox_stats, request.filter)
        return cri.ListPodSandboxStatsResponse(stats=[pod_stats_to_proto(s) for s in found])

    async def ReopenContainerLog(
        self, request: cri.ReopenContainerLogRequest, context: Context
    ) -> cri.ReopenContainerLogResponse:
        await _run(self._pods.reopen_log, request.container_id)
        return cri.ReopenContainerLogResponse()

    async def StreamPodSandboxes(
        self, request: cri.StreamPodSandboxesRequest, context: Context
    ) -> AsyncIterator[cri.StreamPodSandboxesResponse]:
        found = await _run(self._pods.list_sandboxes, request.filter)
        for batch in _batches(found):
            yield cri.StreamPodSandboxesResponse(pod_sandboxes=[sandbox_to_proto(s) for s in batch])

    async def StreamContainers(
        self, request: cri.StreamContainersRequest, context: Context
    ) -> AsyncIterator[cri.StreamContainersResponse]:
        found = await _run(self._pods.list_containers, request.filter)
        for batch in _batches(found):
            yield cri.StreamContainersResponse(containers=[container_to_proto(c) for c in batch])

    async def StreamContainerStats(
        self, request: cri.StreamContainerStatsRequest, context: Context
    ) -> AsyncIterator[cri.StreamContainerStatsResponse]:
        found = await _run(self._pods.list_container_stats, request.filter)
        for batch in _batches(found):
            stats = [container_stats_to_proto(c) for c in batch]
            yield cri.StreamContainerStatsResponse(container_stats=stats)

    async def StreamPodSandboxStats(
        self, request: cri.StreamPodSandboxStatsRequest, context: Context
    ) -> AsyncIterator[cri.StreamPodSandboxStatsResponse]:
        found = await _run(self._pods.list_sandbox_stats, request.filter)
        for batch in _batches(found):
            stats = [pod_stats_to_proto(p) for p in batch]
            yield cri.StreamPodSandboxStatsResponse(pod_sandbox_stats=stats)

    async def UpdateRuntimeConfig(
        self, request: cri.UpdateRuntimeConfigRequest, context: Context
    ) -> cri.UpdateRuntimeConfigResponse:
        # containerd uses the pod CIDR only to fill a CNI configuration template;
        # without one (as here) it takes the call and does nothing, and so does berth.
        return cri.UpdateRuntimeConfigResponse()

    async def RuntimeConfig(
        self, request: cri.RuntimeConfigRequest, context: Context
    ) -> cri.RuntimeConfigResponse:
        # Pods' cgroups are paths under cgroupfs (<cgroup_parent>/<id>), not systemd units.
        return cri.RuntimeConfigResponse(
            linux=cri.LinuxRuntimeConfiguration(cgroup_driver=cri.CGROUPFS)
        )

    async def ExecSync(
        self, request: cri.ExecSyncRequest, context: Context
    ) -> cri.ExecSyncResponse:
        out, err, code = await _run(
            self._pods.exec_sync, request.container_id, list(request.cmd), request.timeout
        )
        return cri.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    async def Version(self, request: cri.VersionRequest, context: Context) -> cri.VersionResponse:
        return cri.VersionResponse(
            version=KUBE_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=BERTH_VERSION,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: cri.StatusRequest, context: Context) -> cri.StatusResponse:
        network_ok, network_why = await _run(self._network_ready)
        conditions = [
            cri.RuntimeCondition(type="RuntimeReady", status=True),
            cri.RuntimeCondition(
                type="NetworkReady",
                status=network_ok,
                reason="" if network_ok else "NetworkPluginNotReady",
                message=network_why,
            ),
        ]
        return cri.StatusResponse(
            status=cri.RuntimeStatus(conditions=conditions),
            runtime_handlers=[cri.RuntimeHandler(name="")],
        )


def _unimplemented(name: str) -> Callable[..., Any]:
    async def method(self: Any, request: Any, context: Context) -> Any:
        raise Unimplemented(f"CRI {name}: not served by berth yet")

    method.__name__ = name
    return method


# Every RuntimeService RPC the class above does not define answers UNIMPLEMENTED clearly
# (the generated base would raise NotImplementedError, an UNKNOWN to the caller).
for _name in cri.DESCRIPTOR.services_by_name["RuntimeService"].methods_by_name:
    if _name not in RuntimeServicer.__dict__:
        setattr(RuntimeServicer, _name, _unimplemented(_name))
