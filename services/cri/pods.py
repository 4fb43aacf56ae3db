"""Pod sandboxes and their containers, kept as containerd's CRI keeps them.

Everything lives in the suite, in the ``k8s.io`` namespace: a sandbox is a container
record labelled ``io.cri-containerd.kind=sandbox`` running the pause image, a CRI
container one labelled ``kind=container``; each carries its CRI config as an extension
and what happens to it later (start time, pod IP) as labels, so a restarted CRI
service finds everything again and ``ctr -n k8s.io`` sees it all. A container's task
is made on start (CREATED = a record without a task, as in containerd) and kept after
its exit until the container is removed, so its exit status and times stay known.

Networking is CNI's, into the sandbox's namespace, as go-cni does it; containers join
the sandbox's network, IPC and UTS namespaces (and its PID namespace when asked).
Logs are written by each container's shim in the CRI format (``file://...?format=cri``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cri.images import CriImages
from services.cri.stats import CpuRates, Usage, network_usage, usage_from_metrics
from shared import cni
from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:
    import berth
    from berth.task import TaskInfo

KIND_LABEL = "io.cri-containerd.kind"
SANDBOX = "sandbox"
CONTAINER = "container"
SANDBOX_ID_LABEL = "io.berth.cri.sandbox-id"
IMAGE_ID_LABEL = "io.berth.cri.image-id"
CREATED_LABEL = "io.berth.cri.created-at"
STARTED_LABEL = "io.berth.cri.started-at"
IP_LABEL = "io.berth.cri.ip"
OOM_LABEL = "io.berth.cri.oom-killed"
SANDBOX_CONFIG = "io.berth.cri.sandbox.config"
CONTAINER_CONFIG = "io.berth.cri.container.config"
LOOPBACK = b'{"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}'
IFNAME = "eth0"
STOP_GRACE = 2.0  # after SIGKILL, for the task to be reaped


@dataclass(frozen=True)
class Settings:
    sandbox_image: str = "registry.k8s.io/pause:3.8"
    snapshotter: str = "overlayfs"
    cni_conf_dir: str = cni.DEFAULT_CONF_DIR
    cni_plugin_dirs: tuple[str, ...] = cni.DEFAULT_PLUGIN_DIRS
    cni_cache_dir: str = cni.DEFAULT_CACHE_DIR
    fifo_dir: str = ""
    root_dir: str = "/var/lib/berth/cri"  # per-sandbox files: hostname, hosts, resolv.conf
    state_dir: str = "/run/berth/cri"  # per-sandbox /dev/shm mounts


@dataclass(frozen=True)
class SandboxState:
    id: str
    config: cri.PodSandboxConfig
    ready: bool
    created_at: int
    ip: str = ""
    pid: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerState:
    id: str
    sandbox_id: str
    config: cri.ContainerConfig
    image_id: str
    state: int  # cri.ContainerState
    created_at: int
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    log_path: str = ""


def _new_id() -> str:
    return secrets.token_hex(32)


def _match_labels(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _ns(dt: Any) -> int:
    return int(dt.timestamp() * 1e9) if dt is not None else 0


class _View:
    """What one call reads of the suite, each part read at most once: every task of
    the namespace (one ``Tasks.List``) and every sandbox record (one ``List``), both
    from the listing cache when it is current."""

    def __init__(self, pods: Pods) -> None:
        self._pods = pods
        self._tasks: dict[str, TaskInfo] | None = None
        self._sandboxes: dict[str, berth.Container] | None = None

    def task(self, container_id: str) -> TaskInfo | None:
        if self._tasks is None:
            self._tasks = self._pods.listing.tasks()
        return self._tasks.get(container_id)

    def sandbox(self, sandbox_id: str) -> berth.Container | None:
        if self._sandboxes is None:
            self._sandboxes = {c.id: c for c in self._pods.records(SANDBOX)}
        return self._sandboxes.get(sandbox_id)


class _Listing:
    """The namespace's tasks and CRI records as last read, for kubelet's relists.

    kubelet lists pods and containers every second; reading them anew each time costs
    tens of milliseconds of gRPC. What was read stays good until something changes:
    this process's own changes, and the suite's ``/containers/*`` and ``/tasks/*``
    events in ``k8s.io`` (containerd's CRI keeps its store current the same way), clear
    it; and it is read again after ``MAX_AGE`` whatever happens, should an event be lost.
    """

    MAX_AGE = 10.0

    def __init__(self, client: berth.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._generation = 0
        self._tasks: tuple[float, dict[str, TaskInfo]] | None = None
        self._records: dict[str, tuple[float, list[berth.Container]]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._tasks = None
            self._records.clear()

    def tasks(self) -> dict[str, TaskInfo]:
        with self._lock:
            cached, generation = self._tasks, self._generation
        if cached is not None and time.monotonic() - cached[0] < self.MAX_AGE:
            return cached[1]
        fresh = {t.container_id: t for t in self._client.tasks()}
        with self._lock:
            if generation == self._generation:  # nothing changed while we read
                self._tasks = (time.monotonic(), fresh)
        return fresh

    def records(self, kind: str) -> list[berth.Container]:
        with self._lock:
            cached, generation = self._records.get(kind), self._generation
        if cached is not None and time.monotonic() - cached[0] < self.MAX_AGE:
            return cached[1]
        fresh = self._client.containers(f'labels."{KIND_LABEL}"=={kind}')
        with self._lock:
            if generation == self._generation:
                self._records[kind] = (time.monotonic(), fresh)
        return fresh


def _changes(method: Callable[..., Any]) -> Callable[..., Any]:
    """A method that changes the suite: the listing cache is cleared before and after."""

    @functools.wraps(method)
    def wrapper(self: Pods, *args: Any, **kwargs: Any) -> Any:
        self.listing.invalidate()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.listing.invalidate()

    return wrapper


class Pods:
    """RuntimeService's pod and container logic over a berth client in ``k8s.io``."""

    def __init__(self, client: berth.Client, images: CriImages, settings: Settings) -> None:
        self._client = client
        self._images = images
        self._settings = settings
        self._cpu = CpuRates()
        self.listing = _Listing(client)
        self._stdin_keepers: dict[str, int] = {}
        # Which pod a container was in, for events about containers already gone.
        self._pod_of: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------

    def _network(self) -> cni.Network:
        return cni.Network.from_conf_dir(
            self._settings.cni_conf_dir,
            self._settings.cni_plugin_dirs,
            self._settings.cni_cache_dir,
        )

    def _loopback(self) -> cni.Network:
        return cni.Network(
            cni.NetworkConfig.parse(LOOPBACK),
            self._settings.cni_plugin_dirs,
            self._settings.cni_cache_dir,
        )

    @property
    def client(self) -> berth.Client:
        return self._client

    def records(self, kind: str) -> list[berth.Container]:
        return self.listing.records(kind)

    def _find(self, kind: str, wanted: str) -> berth.Container:
        """The record of ``kind`` whose ID is ``wanted`` or starts with it (as crictl
        shortens IDs)."""
        import berth

        if not wanted:
            raise InvalidArgument(f"no {kind} ID given")
        with contextlib.suppress(berth.NotFound):
            record = self._client.load_container(wanted)
            if record.labels().get(KIND_LABEL) == kind:
                return record
        found = [c for c in self.records(kind) if c.id.startswith(wanted)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(f"{kind} ID {wanted!r} is ambiguous")
        raise NotFound(f"{'pod sandbox' if kind == SANDBOX else kind} {wanted}: not found")

    def _task(self, container: berth.Container) -> berth.Task | None:
        import berth

        try:
            return container.task()
        except berth.NotFound:
            return None

    @staticmethod
    def _extension(container: berth.Container, name: str, message: Any) -> Any:
        packed = container.info(refresh=False).extensions.get(name)
        if packed is not None:
            message.ParseFromString(packed.value)
        return message

    # -- sandboxes -----------------------------------------------------------------

    @_changes
    def run_sandbox(self, config: cri.PodSandboxConfig) -> str:
        import berth
        from berth import cio, oci

        meta = config.metadata
        if not meta.name or not meta.namespace:
            raise InvalidArgument("a pod sandbox needs metadata with a name and a namespace")
        options = config.linux.security_context.namespace_options
        host_network = options.network == cri.NODE
        network = None if host_network else self._network()  # fails clearly when none
        image_id = self._images.resolve(self._settings.sandbox_image)
        if image_id is None:
            image_id = self._images.pull(self._settings.sandbox_image)
        self._images.pin(image_id)
        image = self._images.record(image_id)

        sandbox_id = _new_id()
        files = self._sandbox_dir(sandbox_id)
        _write_sandbox_files(files, config, host_network)
        shm = self._shm_dir(sandbox_id)
        if options.ipc != cri.NODE:
            try:
                _mount_shm(shm)
            except BaseException:
                shutil.rmtree(files, ignore_errors=True)
                raise
        spec_opts: list[oci.SpecOpt] = [
            oci.with_image_config(image),
            oci.with_rootfs_readonly,
            oci.with_cgroup(_cgroup(config.linux.cgroup_parent, sandbox_id)),
            oci.with_annotations(_annotations(SANDBOX, sandbox_id, config)),
        ]
        if host_network:  # the node's network and, as in containerd, its hostname
            spec_opts += [oci.with_host_network, oci.with_host_namespace("uts")]
        else:
            spec_opts.append(oci.with_hostname(config.hostname or meta.name))
        if options.pid == cri.NODE:
            spec_opts.append(oci.with_host_namespace("pid"))
        if options.ipc == cri.NODE:
            spec_opts.append(oci.with_host_namespace("ipc"))
        spec_opts += _shm_mount(shm if options.ipc != cri.NODE else Path("/dev/shm"))
        if config.linux.sysctls:
            spec_opts.append(_with_sysctls(dict(config.linux.sysctls)))
        sandbox_security = config.linux.security_context
        if not sandbox_security.privileged:
            seccomp = sandbox_security.seccomp if sandbox_security.HasField("seccomp") else None
            spec_opts += _seccomp(seccomp, sandbox_security.seccomp_profile_path)
        labels = {
            **dict(config.labels),
            KIND_LABEL: SANDBOX,
            CREATED_LABEL: str(time.time_ns()),
        }
        try:
            container = self._client.new_container(
                sandbox_id,
                berth.with_container_extension(SANDBOX_CONFIG, config),
                image=image,
                snapshot=berth.with_new_snapshot(sandbox_id, image),
                spec=berth.with_new_spec(*spec_opts),
                labels=labels,
            )
        except BaseException:
            self._release_files(sandbox_id)
            raise
        task = None
        try:
            task = container.new_task(cio.null_io())
            if network is not None:
                netns = f"/proc/{task.pid}/ns/net"
                self._loopback().setup(sandbox_id, netns, "lo")
                attached = network.setup(sandbox_id, netns, IFNAME, _capability_args(config))
                addresses = attached.addresses()
                if addresses:
                    container.set_labels({IP_LABEL: addresses[0].partition("/")[0]})
            task.start()
        except BaseException:
            with contextlib.suppress(berth.BerthError):  # the first error is the news
                self._teardown_network(sandbox_id)
            if task is not None:
                with contextlib.suppress(berth.BerthError):
                    task.delete(force=True)
            with contextlib.suppress(berth.BerthError):
                container.delete()
            self._release_files(sandbox_id)
            raise
        return sandbox_id

    def _teardown_network(self, sandbox_id: str) -> None:
        cni.detach_everywhere(
            sandbox_id, self._settings.cni_plugin_dirs, self._settings.cni_cache_dir
        )

    @_changes
    def stop_sandbox(self, wanted: str) -> None:
        """Stop every container of the pod and the sandbox; absent is fine."""
        try:
            sandbox = self._find(SANDBOX, wanted)
        except NotFound:
            return
        for container in self._containers_of(sandbox.id):
            self.stop_container(container.id, 0)
        self._teardown_network(sandbox.id)
        task = self._task(sandbox)
        if task is not None:
            _kill_and_reap(task)
            task.delete(force=True)
        _unmount_shm(self._shm_dir(sandbox.id))  # nothing of the pod runs to use it

    @_changes
    def remove_sandbox(self, wanted: str) -> None:
        """Remove the pod: its containers, the sandbox, its snapshot; absent is fine."""
        try:
            sandbox = self._find(SANDBOX, wanted)
        except NotFound:
            return
        self.stop_sandbox(sandbox.id)
        for container in self._containers_of(sandbox.id):
            self.remove_container(container.id)
        sandbox.delete()
        self._release_files(sandbox.id)

    def _sandbox_dir(self, sandbox_id: str) -> Path:
        return Path(self._settings.root_dir, "sandboxes", sandbox_id)

    def _shm_dir(self, sandbox_id: str) -> Path:
        return Path(self._settings.state_dir, "sandboxes", sandbox_id, "shm")

    def _release_files(self, sandbox_id: str) -> None:
        """The pod's files and /dev/shm, gone."""
        shm = self._shm_dir(sandbox_id)
        _unmount_shm(shm)
        shutil.rmtree(shm.parent, ignore_errors=True)
        shutil.rmtree(self._sandbox_dir(sandbox_id), ignore_errors=True)

    def _sandbox_state(self, sandbox: berth.Container, view: _View | None = None) -> SandboxState:
        from berth.task import Status

        view = view or _View(self)
        config = self._extension(sandbox, SANDBOX_CONFIG, cri.PodSandboxConfig())
        labels = sandbox.info(refresh=False).labels
        task = view.task(sandbox.id)
        ready = task is not None and task.status in (Status.RUNNING, Status.PAUSED)
        return SandboxState(
            sandbox.id,
            config,
            ready,
            int(labels.get(CREATED_LABEL, "0")),
            labels.get(IP_LABEL, ""),
            task.pid if task is not None else 0,
            dict(config.labels),
        )

    def sandbox_status(self, wanted: str) -> SandboxState:
        return self._sandbox_state(self._find(SANDBOX, wanted))

    def list_sandboxes(self, flt: cri.PodSandboxFilter) -> list[SandboxState]:
        found = []
        view = _View(self)
        for record in self.records(SANDBOX):
            if flt.id and not record.id.startswith(flt.id):
                continue
            state = self._sandbox_state(record, view)
            if flt.HasField("state") and (flt.state.state == cri.SANDBOX_READY) != state.ready:
                continue
            if not _match_labels(state.labels, flt.label_selector):
                continue
            found.append(state)
        return found

    def _containers_of(self, sandbox_id: str) -> list[berth.Container]:
        return self._client.containers(
            f'labels."{KIND_LABEL}"=={CONTAINER},labels."{SANDBOX_ID_LABEL}"=={sandbox_id}'
        )

    # -- containers ----------------------------------------------------------------

    @_changes
    def create_container(
        self, sandbox_id: str, config: cri.ContainerConfig, sandbox_config: cri.PodSandboxConfig
    ) -> str:
        import berth
        from berth import oci

        sandbox = self._find(SANDBOX, sandbox_id)
        state = self._sandbox_state(sandbox)
        if not state.ready:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        if not config.metadata.name:
            raise InvalidArgument("a container needs metadata with a name")
        image_id = self._images.resolve(config.image.image)
        if image_id is None:
            raise NotFound(f"image {config.image.image!r}: not found")
        image = self._images.record(image_id)
        image_config = dict(image.config().get("config") or {})
        container_id = _new_id()
        pod = state.config
        linux = config.linux
        security = linux.security_context
        ns_options = security.namespace_options
        spec_opts: list[oci.SpecOpt] = [
            oci.with_image_config(image),
            oci.with_process_args(*_process_args(config, image_config)),
            oci.with_cgroup(_cgroup(pod.linux.cgroup_parent, container_id)),
            oci.with_annotations(_annotations(CONTAINER, sandbox.id, pod, config, image_id)),
        ]
        if config.envs:
            spec_opts.append(oci.with_env([f"{kv.key}={kv.value}" for kv in config.envs]))
        if config.working_dir:
            spec_opts.append(oci.with_process_cwd(config.working_dir))
        if config.tty:
            spec_opts.append(oci.with_tty)
        pid = state.pid
        joined = ["ipc"]
        if pod.linux.security_context.namespace_options.network == cri.NODE:
            # The node's UTS namespace itself, never joined by path: a hostname set
            # there would rename the node.
            spec_opts += [oci.with_host_network, oci.with_host_namespace("uts")]
        else:
            joined += ["network", "uts"]
            spec_opts.append(oci.with_hostname(pod.hostname or pod.metadata.name))
        if ns_options.pid == cri.POD:
            joined.append("pid")
        elif ns_options.pid == cri.NODE:
            spec_opts.append(oci.with_host_namespace("pid"))
        for kind in joined:
            spec_opts.append(oci.with_linux_namespace(kind, f"/proc/{pid}/ns/{_proc_ns(kind)}"))
        taken = {m.container_path for m in config.mounts}
        if "/dev/shm" not in taken:
            host_ipc = pod.linux.security_context.namespace_options.ipc == cri.NODE
            spec_opts += _shm_mount(Path("/dev/shm") if host_ipc else self._shm_dir(sandbox.id))
        mounts = [_bind(m) for m in config.mounts]
        mounts += _sandbox_file_mounts(
            self._sandbox_dir(sandbox.id),
            {m.container_path for m in config.mounts},
            security.readonly_rootfs,
        )
        spec_opts.append(oci.with_mounts(mounts))
        if security.privileged:
            spec_opts += [oci.with_privileged, oci.with_all_devices_allowed, oci.with_host_devices]
        if security.capabilities.add_capabilities:
            spec_opts.append(
                oci.with_added_capabilities(list(security.capabilities.add_capabilities))
            )
        if security.capabilities.drop_capabilities:
            spec_opts.append(
                oci.with_dropped_capabilities(list(security.capabilities.drop_capabilities))
            )
        if security.HasField("run_as_user"):
            gid = security.run_as_group.value if security.HasField("run_as_group") else None
            user = str(security.run_as_user.value) + (f":{gid}" if gid is not None else "")
            spec_opts.append(oci.with_user(user))
        elif security.run_as_username:
            spec_opts.append(oci.with_user(security.run_as_username))
        if security.readonly_rootfs:
            spec_opts.append(oci.with_rootfs_readonly)
        if not security.privileged:  # privileged containers are unconfined, as in containerd
            spec_opts += _seccomp(security.seccomp if security.HasField("seccomp") else None,
                                  security.seccomp_profile_path)  # fmt: skip
        resources = linux.resources
        if resources.memory_limit_in_bytes:
            spec_opts.append(oci.with_memory_limit(resources.memory_limit_in_bytes))
        if resources.cpu_quota or resources.cpu_period:
            period = resources.cpu_period or 100_000  # the kernel's default period
            spec_opts.append(oci.with_cpu_cfs(resources.cpu_quota, period))
        if resources.cpu_shares:
            spec_opts.append(oci.with_cpu_shares(resources.cpu_shares))
        labels = {
            **dict(config.labels),
            KIND_LABEL: CONTAINER,
            SANDBOX_ID_LABEL: sandbox.id,
            IMAGE_ID_LABEL: image_id,
            CREATED_LABEL: str(time.time_ns()),
        }
        self._remember_pod(container_id, sandbox.id)
        self._client.new_container(
            container_id,
            berth.with_container_extension(CONTAINER_CONFIG, config),
            image=image,
            snapshot=berth.with_new_snapshot(container_id, image),
            spec=berth.with_new_spec(*spec_opts),
            labels=labels,
        )
        return container_id

    def _log_path(
        self, container: berth.Container, config: cri.ContainerConfig, view: _View | None = None
    ) -> str:
        sandbox_id = container.info(refresh=False).labels.get(SANDBOX_ID_LABEL, "")
        sandbox = (view or _View(self)).sandbox(sandbox_id)
        if sandbox is None:
            return ""
        pod = self._extension(sandbox, SANDBOX_CONFIG, cri.PodSandboxConfig())
        if not pod.log_directory or not config.log_path:
            return ""
        return os.path.join(pod.log_directory, config.log_path)

    @_changes
    def start_container(self, wanted: str) -> None:
        from berth import cio

        container = self._find(CONTAINER, wanted)
        if self._task(container) is not None:
            raise FailedPrecondition(f"container {container.id} was started already")
        config = self._extension(container, CONTAINER_CONFIG, cri.ContainerConfig())
        sandbox_id = container.info(refresh=False).labels.get(SANDBOX_ID_LABEL, "")
        if not self._sandbox_state(self._find(SANDBOX, sandbox_id)).ready:
            raise FailedPrecondition(f"pod sandbox {sandbox_id} is not ready")
        log_path = self._log_path(container, config)
        # Without a log file the output goes nowhere, as with containerd.
        target = f"file://{log_path}?format=cri" if log_path else "file:///dev/null"
        stdin = self._stdin_fifo(container.id) if config.stdin else None
        if stdin is not None:
            stdin.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkfifo(stdin, 0o600)
        creator = cio.log_uri(target, stdin=str(stdin or ""), terminal=config.tty)
        task = container.new_task(creator)
        try:
            task.start()
            if stdin is not None and not config.stdin_once:
                # A writer of our own keeps the input open between attaches (kept while
                # this process lives, as containerd's CRI keeps its end).
                self._stdin_keepers[container.id] = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
        except BaseException:
            with contextlib.suppress(Exception):
                task.delete(force=True)
            raise
        container.set_labels({STARTED_LABEL: str(time.time_ns())})

    def _stdin_fifo(self, container_id: str) -> Path:
        return Path(self._settings.state_dir, "containers", container_id, "stdin")

    def attach_target(self, request: cri.AttachRequest) -> AttachTarget:
        """What an attach to the container reads and writes: its CRI log, its stdin."""
        from berth.task import Status

        container = self._find(CONTAINER, request.container_id)
        task = self._task(container)
        if task is None or task.status() != Status.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        config = self._extension(container, CONTAINER_CONFIG, cri.ContainerConfig())
        if request.stdin and not config.stdin:
            raise InvalidArgument(f"container {container.id} was not created with stdin")
        if request.tty != config.tty:
            raise InvalidArgument(f"container {container.id}: tty is {config.tty}")
        stdin = self._stdin_fifo(container.id) if request.stdin else None
        return AttachTarget(container.id, self._log_path(container, config), stdin, task)

    def release_stdin(self, container_id: str) -> None:
        keeper = self._stdin_keepers.pop(container_id, None)
        if keeper is not None:
            os.close(keeper)

    @_changes
    def stop_container(self, wanted: str, timeout: int) -> None:
        """The stop signal, ``timeout`` seconds, then SIGKILL; a container that is not
        running (or not there) is fine."""
        from berth.task import Status

        try:
            container = self._find(CONTAINER, wanted)
        except NotFound:
            return
        task = self._task(container)
        if task is None or task.status() not in (Status.RUNNING, Status.PAUSED):
            return
        config = self._extension(container, CONTAINER_CONFIG, cri.ContainerConfig())
        exited = task.wait()
        if timeout > 0:
            stop_signal = _stop_signal(config, container)
            with contextlib.suppress(NotFound, FailedPrecondition):
                task.kill(stop_signal)
            with contextlib.suppress(TimeoutError):
                exited.result(timeout)
                return
        _kill_and_reap(task, exited)

    @_changes
    def remove_container(self, wanted: str) -> None:
        try:
            container = self._find(CONTAINER, wanted)
        except NotFound:
            return
        task = self._task(container)
        if task is not None:
            task.delete(force=True)
        self.release_stdin(container.id)
        shutil.rmtree(self._stdin_fifo(container.id).parent, ignore_errors=True)
        container.delete()

    def _container_state(
        self, container: berth.Container, view: _View | None = None
    ) -> ContainerState:
        from berth.task import Status

        view = view or _View(self)
        info = container.info(refresh=False)
        labels = info.labels
        config = self._extension(container, CONTAINER_CONFIG, cri.ContainerConfig())
        image_id = labels.get(IMAGE_ID_LABEL, "")
        state, finished, code, reason = cri.CONTAINER_CREATED, 0, 0, ""
        process = view.task(container.id)
        if process is not None:
            if process.status == Status.STOPPED:
                state, code = cri.CONTAINER_EXITED, process.exit_status
                finished = _ns(process.exited_at)
                if labels.get(OOM_LABEL):
                    reason = "OOMKilled"
                else:
                    reason = "Completed" if code == 0 else "Error"
            elif process.status in (Status.RUNNING, Status.PAUSED, Status.PAUSING):
                state = cri.CONTAINER_RUNNING
            elif process.status == Status.UNKNOWN:
                state = cri.CONTAINER_UNKNOWN
        return ContainerState(
            container.id,
            labels.get(SANDBOX_ID_LABEL, ""),
            config,
            image_id,
            state,
            int(labels.get(CREATED_LABEL, "0")),
            int(labels.get(STARTED_LABEL, "0")),
            finished,
            code,
            reason,
            self._log_path(container, config, view),
        )

    def reopen_log(self, wanted: str) -> None:
        """After kubelet renamed the log file: a new one at the path. The shim writes
        there from its next record on (it checks the path before each)."""
        from berth.task import Status

        container = self._find(CONTAINER, wanted)
        task = self._task(container)
        if task is None or task.status() != Status.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        config = self._extension(container, CONTAINER_CONFIG, cri.ContainerConfig())
        path = self._log_path(container, config)
        if path:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))

    def event_statuses(self, container_id: str) -> tuple[SandboxState | None, list[ContainerState]]:
        """For an event about ``container_id`` (a sandbox or a container): its pod's
        status and the statuses of the pod's containers, as kubelet's evented PLEG
        wants them; (None, []) when nothing of it is left to say."""
        import berth

        view = _View(self)
        sandbox_id = self._pod_of.get(container_id, "")
        with contextlib.suppress(berth.NotFound):
            record = self._client.load_container(container_id)
            labels = record.info(refresh=False).labels
            if labels.get(KIND_LABEL) == SANDBOX:
                sandbox_id = record.id
            elif labels.get(KIND_LABEL) == CONTAINER:
                sandbox_id = labels.get(SANDBOX_ID_LABEL, "")
                self._remember_pod(container_id, sandbox_id)
            else:
                return None, []
        sandbox = view.sandbox(sandbox_id) if sandbox_id else None
        if sandbox is None:
            return None, []
        containers = [self._container_state(c, view) for c in self._containers_of(sandbox_id)]
        return self._sandbox_state(sandbox, view), containers

    def _remember_pod(self, container_id: str, sandbox_id: str) -> None:
        if len(self._pod_of) > 10_000:  # bounded: only recent deletions need it
            self._pod_of.clear()
        self._pod_of[container_id] = sandbox_id

    @_changes
    def mark_oom(self, container_id: str) -> None:
        """Remember that the kernel's OOM killer struck in the container (from the
        runtime's ``/tasks/oom``), for its status to say ``OOMKilled``."""
        import berth

        with contextlib.suppress(berth.NotFound):
            container = self._client.load_container(container_id)
            if container.labels().get(KIND_LABEL) == CONTAINER:
                container.set_labels({OOM_LABEL: "true"})

    def container_status(self, wanted: str) -> ContainerState:
        return self._container_state(self._find(CONTAINER, wanted))

    def list_containers(self, flt: cri.ContainerFilter) -> list[ContainerState]:
        found = []
        view = _View(self)
        for record in self.records(CONTAINER):
            if flt.id and not record.id.startswith(flt.id):
                continue
            labels = record.info(refresh=False).labels
            if flt.pod_sandbox_id and not labels.get(SANDBOX_ID_LABEL, "").startswith(
                flt.pod_sandbox_id
            ):
                continue
            state = self._container_state(record, view)
            if flt.HasField("state") and flt.state.state != state.state:
                continue
            if not _match_labels(dict(state.config.labels), flt.label_selector):
                continue
            found.append(state)
        return found

    # -- resources and usage ---------------------------------------------------------

    @_changes
    def update_resources(self, wanted: str, resources: cri.LinuxContainerResources) -> None:
        """New CPU and memory limits: into the record's spec (for a start to come) and
        into the running task, as containerd's CRI does."""
        from google.protobuf import field_mask_pb2

        from berth.task import Status
        from shared import typeurl
        from shared.api.containerd.services.containers.v1 import containers_pb2

        container = self._find(CONTAINER, wanted)
        wanted_resources = _oci_resources(resources)
        spec = container.spec()
        current = spec.setdefault("linux", {}).setdefault("resources", {})
        for key, value in wanted_resources.items():
            current[key] = {**(current.get(key) or {}), **value}
        record = containers_pb2.Container(
            id=container.id, spec=typeurl.pack_json(typeurl.OCI_SPEC, spec)
        )
        self._client.api.containers.Update(
            containers_pb2.UpdateContainerRequest(
                container=record, update_mask=field_mask_pb2.FieldMask(paths=["spec"])
            )
        )
        task = self._task(container)
        if task is not None and task.status() in (Status.RUNNING, Status.PAUSED):
            task.update(wanted_resources)

    def _usage(self, container: berth.Container) -> Usage | None:
        import berth

        task = self._task(container)
        if task is None:
            return None
        try:
            metrics = task.metrics()
        except (berth.NotFound, berth.FailedPrecondition):
            return None  # exited: its cgroup is gone
        return self._cpu.rate(container.id, usage_from_metrics(metrics))

    def _writable_layer(self, container: berth.Container) -> tuple[str, int, int]:
        import berth

        info = container.info(refresh=False)
        if not info.snapshot_key:
            return "", 0, 0
        try:
            usage = self._client.snapshot_service(info.snapshotter).usage(info.snapshot_key)
        except berth.NotFound:
            return "", 0, 0
        return self._images.snapshotter_root(), usage.size, usage.inodes

    def container_stats(self, wanted: str) -> ContainerStats:
        container = self._find(CONTAINER, wanted)
        return ContainerStats(
            self._container_state(container),
            self._usage(container),
            self._writable_layer(container),
        )

    def list_container_stats(self, flt: cri.ContainerStatsFilter) -> list[ContainerStats]:
        selector = cri.ContainerFilter(
            id=flt.id,
            pod_sandbox_id=flt.pod_sandbox_id,
            state=cri.ContainerStateValue(state=cri.CONTAINER_RUNNING),
            label_selector=flt.label_selector,
        )
        found = []
        for state in self.list_containers(selector):
            record = self._client.load_container(state.id)
            found.append(ContainerStats(state, self._usage(record), self._writable_layer(record)))
        return found

    def sandbox_stats(self, wanted: str) -> PodStats:
        sandbox = self._find(SANDBOX, wanted)
        state = self._sandbox_state(sandbox)
        total = self._usage(sandbox) or Usage(time.time_ns())
        containers = []
        for record in self._containers_of(sandbox.id):
            usage = self._usage(record)
            if usage is None:
                continue
            total = total + usage
            containers.append(
                ContainerStats(self._container_state(record), usage, self._writable_layer(record))
            )
        network = network_usage(state.pid) if state.ready and state.pid else []
        return PodStats(state, total, network, containers)

    def list_sandbox_stats(self, flt: cri.PodSandboxStatsFilter) -> list[PodStats]:
        ready = cri.PodSandboxStateValue(state=cri.SANDBOX_READY)
        selector = cri.PodSandboxFilter(id=flt.id, state=ready, label_selector=flt.label_selector)
        return [self.sandbox_stats(s.id) for s in self.list_sandboxes(selector)]

    def start_exec(
        self, request: cri.ExecRequest, stdin: Any, stdout: Any, stderr: Any
    ) -> RunningExec:
        """Start ``request.cmd`` in the container with the streaming server's streams."""
        from berth import cio
        from berth.task import Status

        container = self._find(CONTAINER, request.container_id)
        task = self._task(container)
        if task is None or task.status() != Status.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        fifo_dir = self._settings.fifo_dir or None
        streams = cio.with_streams(stdin, stdout, stderr, terminal=request.tty, fifo_dir=fifo_dir)
        process = task.exec(
            f"exec-{secrets.token_hex(8)}", io=streams, args=list(request.cmd),
            terminal=request.tty,
        )  # fmt: skip
        exited = process.wait()
        try:
            process.start()
        except BaseException:
            with contextlib.suppress(Exception):
                process.delete(force=True)
            raise
        return RunningExec(process, exited)

    def dial(self, sandbox_id: str, port: int) -> socket.socket:
        """A TCP connection to ``port`` on the pod's loopback, made from inside its
        network namespace (the node's, for a pod on the node's network)."""
        state = self._sandbox_state(self._find(SANDBOX, sandbox_id))
        if not state.ready or not state.pid:
            raise FailedPrecondition(f"pod sandbox {state.id} is not running")
        if not 0 < port < 65536:
            raise InvalidArgument(f"port {port} is not a port")
        if state.config.linux.security_context.namespace_options.network == cri.NODE:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        return _connect_in_netns(f"/proc/{state.pid}/ns/net", port)

    def exec_sync(self, wanted: str, cmd: Sequence[str], timeout: int) -> tuple[bytes, bytes, int]:
        """Run ``cmd`` in the container and return (stdout, stderr, exit code);
        DeadlineExceeded (the process killed) after ``timeout`` seconds if not 0."""
        from berth import cio
        from berth.task import Status

        if not cmd:
            raise InvalidArgument("exec needs a command")
        container = self._find(CONTAINER, wanted)
        task = self._task(container)
        if task is None or task.status() != Status.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running")
        out, err = io.BytesIO(), io.BytesIO()
        exec_id = f"exec-{secrets.token_hex(8)}"
        fifo_dir = self._settings.fifo_dir or None
        process = task.exec(
            exec_id, io=cio.with_streams(None, out, err, fifo_dir=fifo_dir), args=list(cmd)
        )
        try:
            exited = process.wait()
            process.start()
            try:
                status = exited.result(timeout or None)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    process.kill(signal.SIGKILL)
                raise DeadlineExceeded(
                    f"command {list(cmd)!r} in {container.id}: timeout {timeout}s exceeded"
                ) from None
        finally:
            with contextlib.suppress(Exception):
                process.delete(force=True)
        return out.getvalue(), err.getvalue(), status.code


@dataclass(frozen=True)
class AttachTarget:
    container_id: str
    log_path: str  # "" when the container logs nowhere
    stdin: Path | None
    task: berth.Task

    def running(self) -> bool:
        from berth.task import Status

        return self.task.status() == Status.RUNNING

    def resize(self, width: int, height: int) -> None:
        self.task.resize(width, height)


class RunningExec:
    """An exec the streaming server started (see streaming.ExecSession)."""

    def __init__(self, process: berth.Process, exited: Any) -> None:
        self._process = process
        self._exited = exited

    def resize(self, width: int, height: int) -> None:
        self._process.resize(width, height)

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # it may have ended meanwhile
            self._process.kill(signal.SIGKILL)

    def finish(self) -> int:
        code = int(self._exited.result().code)
        with contextlib.suppress(Exception):
            self._process.delete()  # returns once the output has all been copied
        return code


@dataclass(frozen=True)
class ContainerStats:
    state: ContainerState
    usage: Usage | None  # None when the container does not run
    writable_layer: tuple[str, int, int]  # mount point, bytes, inodes


@dataclass(frozen=True)
class PodStats:
    sandbox: SandboxState
    usage: Usage  # the sandbox's and its containers' together
    network: list[tuple[str, int, int, int, int]]
    containers: list[ContainerStats]


def _oci_resources(resources: cri.LinuxContainerResources) -> dict[str, Any]:
    """The OCI ``LinuxResources`` a CRI resources message asks for (unset fields out)."""
    cpu = {
        key: value
        for key, value in (
            ("shares", resources.cpu_shares),
            ("quota", resources.cpu_quota),
            ("period", resources.cpu_period),
            ("cpus", resources.cpuset_cpus),
            ("mems", resources.cpuset_mems),
        )
        if value
    }
    memory = {
        key: value
        for key, value in (
            ("limit", resources.memory_limit_in_bytes),
            ("swap", resources.memory_swap_limit_in_bytes),
        )
        if value
    }
    found: dict[str, Any] = {}
    if cpu:
        found["cpu"] = cpu
    if memory:
        found["memory"] = memory
    if resources.unified:
        found["unified"] = dict(resources.unified)
    return found


def _kill_and_reap(task: berth.Task, exited: Any = None) -> None:
    waiter = exited if exited is not None else task.wait()
    with contextlib.suppress(NotFound, FailedPrecondition):
        task.kill(signal.SIGKILL, all=True)
    with contextlib.suppress(TimeoutError):
        waiter.result(STOP_GRACE)


def _stop_signal(config: cri.ContainerConfig, container: berth.Container) -> int:
    if config.stop_signal:
        name = cri.Signal.Name(config.stop_signal)
        with contextlib.suppress(AttributeError):
            return int(getattr(signal, name))
    with contextlib.suppress(Exception):
        configured = container.image().config().get("config", {}).get("StopSignal")
        if configured:
            name = str(configured).upper()
            return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))
    return int(signal.SIGTERM)


def _process_args(config: cri.ContainerConfig, image_config: Mapping[str, Any]) -> list[str]:
    """The process's argv as containerd's CRI (and docker) make it from the config's
    command and args and the image's entrypoint and cmd."""
    command, args = list(config.command), list(config.args)
    if not command:
        if not args:
            args = list(image_config.get("Cmd") or [])
        entrypoint = list(image_config.get("Entrypoint") or [])
        if entrypoint != [""]:
            command = entrypoint
    if not command and not args:
        raise InvalidArgument("no command specified: neither the config nor the image has one")
    return command + args


def _cgroup(parent: str, container_id: str) -> str:
    return f"{parent.rstrip('/')}/{container_id}" if parent else f"/k8s.io/{container_id}"


def _proc_ns(kind: str) -> str:
    return {"network": "net", "mount": "mnt"}.get(kind, kind)


def _bind(mount: cri.Mount) -> dict[str, Any]:
    from berth import oci

    if not mount.container_path or not mount.host_path:
        raise InvalidArgument("a mount needs a container path and a host path")
    if not Path(mount.host_path).exists():
        raise InvalidArgument(f"mount source {mount.host_path}: does not exist")
    bind = oci.bind_mount(mount.host_path, mount.container_path, readonly=mount.readonly)
    propagation = {
        cri.PROPAGATION_PRIVATE: "rprivate",
        cri.PROPAGATION_HOST_TO_CONTAINER: "rslave",
        cri.PROPAGATION_BIDIRECTIONAL: "rshared",
    }.get(mount.propagation, "rprivate")
    bind["options"].append(propagation)
    return bind


def _annotations(
    kind: str,
    sandbox_id: str,
    pod: cri.PodSandboxConfig,
    config: cri.ContainerConfig | None = None,
    image_id: str = "",
) -> dict[str, str]:
    """The annotations containerd's CRI puts in specs (runtimes and hooks read them)."""
    found = {
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-id": sandbox_id,
        "io.kubernetes.cri.sandbox-name": pod.metadata.name,
        "io.kubernetes.cri.sandbox-namespace": pod.metadata.namespace,
        "io.kubernetes.cri.sandbox-uid": pod.metadata.uid,
    }
    if config is not None:
        found["io.kubernetes.cri.container-name"] = config.metadata.name
        found["io.kubernetes.cri.image-name"] = config.image.image
        found["io.kubernetes.cri.image-id"] = image_id
        found.update(config.annotations)
    else:
        found.update(pod.annotations)
    return found


_HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
SANDBOX_FILES = ("hostname", "hosts", "resolv.conf")


def _resolv_conf(dns: cri.DNSConfig) -> str:
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {server}" for server in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "".join(f"{line}\n" for line in lines)


def _write_sandbox_files(directory: Path, config: cri.PodSandboxConfig, host: bool) -> None:
    """The pod's /etc/hostname, /etc/hosts and /etc/resolv.conf, as containerd writes
    them: the node's for a pod on the node's network, else the pod's own (resolv.conf
    from the DNS config, or the node's when the config has none)."""
    directory.mkdir(parents=True, exist_ok=True)
    if host:
        hostname = socket.gethostname()
        hosts = _read_or(Path("/etc/hosts"), _HOSTS)
    else:
        hostname = config.hostname or config.metadata.name
        hosts = _HOSTS
    dns = config.dns_config
    has_dns = bool(dns.servers or dns.searches or dns.options)
    resolv = _resolv_conf(dns) if has_dns and not host else _read_or(Path("/etc/resolv.conf"), "")
    for name, text in (("hostname", f"{hostname}\n"), ("hosts", hosts), ("resolv.conf", resolv)):
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)


def _read_or(path: Path, default: str) -> str:
    try:
        return path.read_text()
    except OSError:
        return default


def _sandbox_file_mounts(directory: Path, taken: set[str], readonly: bool) -> list[dict[str, Any]]:
    """Bind mounts of the pod's files into a container, but where the config mounts
    something of its own (kubelet mounts its managed /etc/hosts)."""
    return [
        {
            "destination": f"/etc/{name}",
            "type": "bind",
            "source": str(directory / name),
            "options": ["rbind", "rprivate", "ro" if readonly else "rw"],
        }
        for name in SANDBOX_FILES
        if f"/etc/{name}" not in taken and (directory / name).exists()
    ]


_CLONE_NEWNET = 0x40000000


def _connect_in_netns(netns: str, port: int) -> socket.socket:
    """Connect to 127.0.0.1:``port`` in the network namespace at ``netns``: a thread of
    its own enters it (setns changes only the calling thread's) and makes the socket,
    which keeps to that namespace wherever it is used afterwards."""
    import ctypes
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def connect() -> None:
        try:
            with open(netns) as ns:
                if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.settimeout(None)
            made.append(conn)
        except OSError as e:
            failed.append(e)

    thread = threading.Thread(target=connect, name="cri-netns-dial")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _capability_args(config: cri.PodSandboxConfig) -> dict[str, Any]:
    """The pod's host ports for CNI plugins that take ``portMappings`` (portmap), as
    containerd's CRI passes them; mappings without a host port are not for the host."""
    protocols = {cri.TCP: "tcp", cri.UDP: "udp", cri.SCTP: "sctp"}
    mappings = [
        {
            "hostPort": p.host_port,
            "containerPort": p.container_port,
            "protocol": protocols.get(p.protocol, "tcp"),
            "hostIP": p.host_ip,
        }
        for p in config.port_mappings
        if p.host_port > 0
    ]
    return {"portMappings": mappings} if mappings else {}


def _seccomp(profile: cri.SecurityProfile | None, legacy_path: str) -> list[Any]:
    """Spec options for a CRI seccomp choice: RuntimeDefault (the default profile),
    Localhost (a profile file on the node, OCI JSON), Unconfined or unset (none); the
    deprecated ``seccomp_profile_path`` (``runtime/default``, ``localhost/<path>``)
    when the message is not there."""
    from berth import oci

    if profile is None:
        if legacy_path in ("runtime/default", "docker/default"):
            return [oci.with_default_seccomp]
        if legacy_path.startswith("localhost/"):
            return [oci.with_seccomp_profile_file(legacy_path.removeprefix("localhost"))]
        return []
    if profile.profile_type == cri.SecurityProfile.RuntimeDefault:
        return [oci.with_default_seccomp]
    if profile.profile_type == cri.SecurityProfile.Localhost:
        return [oci.with_seccomp_profile_file(profile.localhost_ref)]
    return []


SHM_OPTIONS = ("nosuid", "nodev", "noexec", "mode=1777", "size=65536k")  # containerd's


def _mount_shm(path: Path) -> None:
    """The pod's /dev/shm: one tmpfs its containers share, as they share IPC."""
    from shared import mount
    from shared.snapshots import Mount

    path.mkdir(parents=True, exist_ok=True)
    mount.mount(Mount("tmpfs", "shm", options=SHM_OPTIONS), str(path))


def _unmount_shm(path: Path) -> None:
    from shared import mount

    if path.exists() and mount.is_mountpoint(str(path)):
        mount.unmount_all(str(path))


def _shm_mount(source: Path) -> list[Callable[..., None]]:
    """Spec options putting ``source`` at /dev/shm in place of the default tmpfs."""
    from berth import oci

    shm = {
        "destination": "/dev/shm",
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"],
    }
    return [oci.without_mounts("/dev/shm"), oci.with_mounts([shm])]


def _with_sysctls(sysctls: dict[str, str]) -> Callable[..., None]:
    def opt(context: Any, spec: dict[str, Any]) -> None:
        linux = spec.setdefault("linux", {})
        linux["sysctl"] = {**(linux.get("sysctl") or {}), **sysctls}

    return opt
