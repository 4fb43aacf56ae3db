"""Pods through the CRI, as kubelet drives them: berth vs Debian containerd's CRI plugin.

    .venv/bin/python -m bench.cri [--rounds 10]

Both runtimes are started by the benchmark on temp dirs, each with a CNI bridge
network of its own (Debian's plugins), the pause image built offline by
scripts/pause-image.sh and the offline busybox image imported into ``k8s.io``.
Each round, alternating between the two, times over the CRI gRPC API:

* ``RunPodSandbox`` (pause container, network set up);
* ``CreateContainer`` + ``StartContainer`` of a busybox ``sleep``;
* ``ExecSync`` of ``true`` (what a kubelet exec probe costs);
* ``ListContainers`` + ``ListPodSandbox`` with nothing changed since the last
  listing (kubelet's relist, every second);
* ``StopPodSandbox`` + ``RemovePodSandbox`` (the pod's teardown).

Printed: medians per step and berth / containerd ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from bench.common import CTR, containerd, median, timed
from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.api.cri.runtime.v1 import api_pb2_grpc
from shared.config import grpc_target
from tests.harness import REPO, running_suite
from tests.integration.cni_support import PLUGIN_DIR, BridgeNetwork, bridge_network

BUSYBOX = "localhost/berth/busybox:latest"
STEPS = ("run pod", "create+start", "exec probe", "relist", "stop+remove pod")


def cri_config(network: BridgeNetwork) -> str:
    """The CRI plugin's settings, the same keys for both."""
    return (
        '[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "registry.k8s.io/pause:3.8"\n'
        # Root here lacks CAP_SYS_RESOURCE: containerd must clamp the sandbox's -998.
        "restrict_oom_score_adj = true\n"
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        f'conf_dir = "{network.conf_dir}"\nbin_dir = "{PLUGIN_DIR}"\n'
    )


def import_images(address: str, images: Path) -> None:
    for archive in ("pause.tar", "busybox.tar"):
        subprocess.run([CTR, "--address", address, "-n", "k8s.io", "images", "import",
                        str(images / archive)], check=True, capture_output=True)  # fmt: skip


def one_pod(runtime: api_pb2_grpc.RuntimeServiceStub, name: str, logs: Path) -> list[float]:
    pod = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="bench", uid=name),
        hostname=name,
        log_directory=str(logs),
    )
    sandbox_id = ""
    container_id = ""

    def run_pod() -> None:
        nonlocal sandbox_id
        sandbox_id = runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=pod)).pod_sandbox_id

    def create_start() -> None:
        nonlocal container_id
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="sleeper"),
            image=cri.ImageSpec(image=BUSYBOX),
            command=["sleep", "600"],
            log_path="sleeper.log",
        )
        request = cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod
        )
        container_id = runtime.CreateContainer(request).container_id
        runtime.StartContainer(cri.StartContainerRequest(container_id=container_id))

    def probe() -> None:
        reply = runtime.ExecSync(cri.ExecSyncRequest(container_id=container_id, cmd=["true"]))
        assert reply.exit_code == 0

    def list_all() -> None:
        runtime.ListContainers(cri.ListContainersRequest())
        runtime.ListPodSandbox(cri.ListPodSandboxRequest())

    def relist() -> None:
        time.sleep(0.2)  # kubelet relists a second apart; nothing changes in between
        list_all()

    def teardown() -> None:
        runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    results = [timed(step) for step in (run_pod, create_start, probe)]
    list_all()  # the relist that follows changes, untimed; the timed one finds none
    results.append(timed(relist) - 0.2)
    results.append(timed(teardown))
    return results


@contextlib.contextmanager
def stub(address: str) -> Iterator[api_pb2_grpc.RuntimeServiceStub]:
    with grpc.insecure_channel(grpc_target(address)) as channel:
        yield api_pb2_grpc.RuntimeServiceStub(channel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cri-"))
    images = work / "images"
    images.mkdir()
    for script, archive in (("pause-image.sh", "pause.tar"), ("busybox-image.sh", "busybox.tar")):
        subprocess.run([str(REPO / "scripts" / script), str(images / archive)], check=True,
                       capture_output=True)  # fmt: skip
    # containerd's CRI makes these node-wide dirs (its CNI cache, its netns mounts); the
    # benchmark removes them afterwards when they were not there before and are empty.
    node_dirs = [Path(d) for d in ("/var/lib/cni/results", "/var/lib/cni", "/var/run/netns")]
    made_here = [d for d in node_dirs if not d.exists()]
    times: dict[str, list[list[float]]] = {"berth": [], "containerd": []}
    with (
        bridge_network(work / "net-berth") as berth_net,
        bridge_network(work / "net-containerd") as containerd_net,
        running_suite(config=cri_config(berth_net)) as suite,
        containerd(cri_plugin=cri_config(containerd_net)) as containerd_address,
    ):
        addresses = {"berth": suite.address, "containerd": containerd_address}
        for address in addresses.values():
            import_images(address, images)
        with stub(suite.address) as berth_cri, stub(containerd_address) as containerd_cri:
            runtimes = {"berth": berth_cri, "containerd": containerd_cri}
            for name, runtime in runtimes.items():  # warm both up once, untimed
                one_pod(runtime, f"warm-{name}", work / "logs")
            for i in range(args.rounds):
                order = ("berth", "containerd") if i % 2 == 0 else ("containerd", "berth")
                for name in order:
                    times[name].append(one_pod(runtimes[name], f"{name}-{i}", work / "logs"))
    subprocess.run(["rm", "-rf", str(work)], check=False)
    for directory in made_here:
        with contextlib.suppress(OSError):
            directory.rmdir()

    print(f"{'step (median ms)':<20} {'berth':>9} {'containerd':>11} {'ratio':>7}")
    for index, step in enumerate(STEPS):
        ours = median([r[index] for r in times["berth"]]) * 1000
        theirs = median([r[index] for r in times["containerd"]]) * 1000
        print(f"{step:<20} {ours:9.1f} {theirs:11.1f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
