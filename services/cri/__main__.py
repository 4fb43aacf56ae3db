"""``python -m services.cri``: serve Kubernetes' CRI (``runtime.v1``).

Configured as containerd's CRI plugin, under ``[plugins."io.containerd.grpc.v1.cri"]``:
``sandbox_image`` (default ``registry.k8s.io/pause:3.8``; ``scripts/pause-image.sh``
builds it offline), ``containerd.snapshotter`` (default ``overlayfs``) and
``cni.conf_dir`` / ``cni.bin_dir`` (defaults ``/etc/cni/net.d`` and ``/opt/cni/bin``,
with Debian's ``/usr/lib/cni`` searched after it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from typing import Any

from services.cri.images import NAMESPACE, CriImages
from services.cri.pods import Pods, Settings
from services.cri.servicers import ImageServicer, RuntimeServicer
from services.cri.streaming import StreamingServer
from shared import cni, plugins, topology, typeurl
from shared.api.containerd.events import task_pb2 as events
from shared.api.cri.runtime.v1 import api_pb2_grpc
from shared.errors import BerthError
from shared.events.bus import EventBus
from shared.events.envelope import Envelope, subject_for
from shared.service import ServiceProcess, run

CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def _table(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key)
    return value if isinstance(value, Mapping) else {}


async def follow_ooms(bus: EventBus, pods: Pods) -> None:
    """Mark containers the OOM killer struck, from the runtime's events; a durable
    consumer, so OOMs while this service was down are caught up with."""

    async def on_event(envelope: Envelope) -> None:
        oom = typeurl.unpack(envelope.event)  # containerd's type URLs, not Any's own
        if isinstance(oom, events.TaskOOM) and oom.container_id:
            await asyncio.to_thread(pods.mark_oom, oom.container_id)

    await bus.consume(
        "berth-cri-oom",
        on_event,
        filters=[f'topic=="/tasks/oom",namespace=={NAMESPACE}'],
        subject=subject_for(NAMESPACE, "/tasks/oom"),
    )


async def follow_changes(bus: EventBus, pods: Pods) -> None:
    """Clear the listing cache whenever a container or task of k8s.io changes."""
    changes = f'namespace=={NAMESPACE},topic~="^/(containers|tasks)/"'
    async for _ in bus.subscribe([changes]):
        pods.listing.invalidate()


def network_check(conf_dir: str) -> tuple[bool, str]:
    """Whether a CNI network is configured, and why not (containerd's wording)."""
    try:
        cni.load_default_network(conf_dir)
    except BerthError as e:
        return False, f"Network plugin returns error: cni plugin not initialized: {e}"
    return True, ""


# Blocking client calls run in threads; ExecSync holds one for as long as the command
# runs (kubelet's exec probes), so the default pool of cores + 4 would be taken by a
# few probes while every other call waited.
CALL_THREADS = 64


async def setup(svc: ServiceProcess) -> None:
    import berth

    executor = concurrent.futures.ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="cri")
    asyncio.get_running_loop().set_default_executor(executor)
    svc.on_shutdown(lambda: executor.shutdown(wait=False, cancel_futures=True))

    settings = svc.config.plugin_config(CRI_PLUGIN)
    snapshotter = str(_table(settings, "containerd").get("snapshotter") or "overlayfs")
    cni_table = _table(settings, "cni")
    cni_conf_dir = str(cni_table.get("conf_dir") or cni.DEFAULT_CONF_DIR)
    bin_dir = str(cni_table.get("bin_dir") or "")
    pod_settings = Settings(
        sandbox_image=str(settings.get("sandbox_image") or Settings.sandbox_image),
        snapshotter=snapshotter,
        cni_conf_dir=cni_conf_dir,
        cni_plugin_dirs=(bin_dir, *cni.DEFAULT_PLUGIN_DIRS) if bin_dir else cni.DEFAULT_PLUGIN_DIRS,
        # The CRI's own cache under the root: pods are this node's and this suite's.
        cni_cache_dir=str(svc.config.root / "cri" / "cni"),
        fifo_dir=str(svc.config.state / "cri" / "fifo"),
        root_dir=str(svc.config.root / "cri"),
        state_dir=str(svc.config.state / "cri"),
    )

    # Like containerd's CRI plugin, a client of the suite: through the one socket.
    client = berth.Client(svc.config.address, namespace=NAMESPACE)
    svc.on_shutdown(client.close)
    bus = EventBus(svc.config.nats_url, stream=svc.config.events_stream, name="berth-cri")
    await bus.connect()
    svc.on_shutdown(bus.close)

    images = CriImages(client, snapshotter)
    pods = Pods(client, images, pod_settings)
    svc.spawn(follow_ooms(bus, pods), name="OOM follower")
    svc.spawn(follow_changes(bus, pods), name="listing cache invalidation")
    streaming = StreamingServer(
        pods,
        str(settings.get("stream_server_address") or "127.0.0.1"),
        int(settings.get("stream_server_port") or 0),
    )
    await streaming.start()
    svc.on_shutdown(streaming.stop)
    svc.add_grpc(
        "runtime.v1.ImageService",
        api_pb2_grpc.add_ImageServiceServicer_to_server,
        ImageServicer(images),
    )
    svc.add_grpc(
        "runtime.v1.RuntimeService",
        api_pb2_grpc.add_RuntimeServiceServicer_to_server,
        # The RPCs not built yet are filled in at import (servicers.py), unseen by mypy.
        RuntimeServicer(  # type: ignore[abstract]
            pods, lambda: network_check(cni_conf_dir), bus, streaming
        ),
    )
    svc.plugins = [
        plugins.Plugin(
            plugins.GRPC,
            "cri",
            requires=(plugins.SERVICE,),
            exports={"process": topology.CRI},
        ),
    ]


def main() -> int:
    return run(topology.CRI, setup)


if __name__ == "__main__":
    raise SystemExit(main())
