"""``python -m services.cri``: serve Kubernetes' CRI (``runtime.v1``).

Configured as containerd's CRI plugin, under ``[plugins."io.containerd.grpc.v1.cri"]``:
``containerd.snapshotter`` (default ``overlayfs``) and ``cni.conf_dir`` /
``cni.bin_dir`` (defaults ``/etc/cni/net.d`` and ``/opt/cni/bin``, with Debian's
``/usr/lib/cni`` searched after it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.cri.images import NAMESPACE, CriImages
from services.cri.servicers import ImageServicer, RuntimeServicer
from shared import cni, plugins, topology
from shared.api.cri.runtime.v1 import api_pb2_grpc
from shared.errors import BerthError
from shared.service import ServiceProcess, run

CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def _table(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key)
    return value if isinstance(value, Mapping) else {}


def network_check(conf_dir: str) -> tuple[bool, str]:
    """Whether a CNI network is configured, and why not (containerd's wording)."""
    try:
        cni.load_default_network(conf_dir)
    except BerthError as e:
        return False, f"Network plugin returns error: cni plugin not initialized: {e}"
    return True, ""


async def setup(svc: ServiceProcess) -> None:
    import berth

    settings = svc.config.plugin_config(CRI_PLUGIN)
    snapshotter = str(_table(settings, "containerd").get("snapshotter") or "overlayfs")
    cni_conf_dir = str(_table(settings, "cni").get("conf_dir") or cni.DEFAULT_CONF_DIR)

    # Like containerd's CRI plugin, a client of the suite: through the one socket.
    client = berth.Client(svc.config.address, namespace=NAMESPACE)
    svc.on_shutdown(client.close)
    svc.add_grpc(
        "runtime.v1.ImageService",
        api_pb2_grpc.add_ImageServiceServicer_to_server,
        ImageServicer(CriImages(client, snapshotter)),
    )
    svc.add_grpc(
        "runtime.v1.RuntimeService",
        api_pb2_grpc.add_RuntimeServiceServicer_to_server,
        # The RPCs not built yet are filled in at import (servicers.py), unseen by mypy.
        RuntimeServicer(lambda: network_check(cni_conf_dir)),  # type: ignore[abstract]
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
