"""Tasks outlive the runtime service: restarts, exits while it was down, many containers at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from shared import typeurl
from shared.api.containerd.events import task_pb2 as task_events
from shared.api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from shared.api.containerd.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from shared.config import grpc_target
from tests.harness import Suite, pid_alive, processes_in, running_suite, wait_until
from tests.integration.events_support import exits_of, ooms_of, subscribed
from tests.testimages import Registry

NS = "restart"
MD = [("containerd-namespace", NS)]


@pytest.fixture(scope="module")
def restart_suite(registry: Registry) -> Iterator[tuple[Suite, str]]:
    with running_suite() as s:
        ref = registry.ref("busybox")
        s.ctr("images", "pull", "--plain-http", ref, namespace=NS)
        yield s, ref


def _tasks(suite: Suite) -> dict[str, tuple[str, str]]:
    out = suite.ctr("tasks", "ls", namespace=NS).stdout
    return {r.split()[0]: (r.split()[1], r.split()[2]) for r in out.splitlines()[1:] if r.strip()}


def _restart_runtime(suite: Suite) -> int:
    before = suite.processes()["runtime"]
    os.kill(before, signal.SIGKILL)

    def back() -> bool:
        if suite.processes()["runtime"] == before:
            return False
        return suite.ctr("tasks", "ls", namespace=NS, check=False).returncode == 0

    wait_until(back, 30, what="the runtime service to restart")
    return before


def test_exit_while_the_runtime_is_down_is_reported(restart_suite: tuple[Suite, str]) -> None:
    suite, ref = restart_suite
    suite.ctr("run", "-d", ref, "r-exit", "sleep", "30", namespace=NS)
    pid = int(_tasks(suite)["r-exit"][0])
    seen: list[events_pb2.Envelope] = []
    with grpc.insecure_channel(grpc_target(suite.address)) as ch:
        stream = events_pb2_grpc.EventsStub(ch).Subscribe(
            events_pb2.SubscribeRequest(filters=[f'topic=="/tasks/exit",namespace=={NS}'])
        )
        reader = threading.Thread(target=_drain, args=(stream, seen), daemon=True)
        reader.start()
        old = suite.processes()["runtime"]
        os.kill(old, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)  # the container dies while nobody in berth watches
        wait_until(lambda: not pid_alive(pid), 10, what="the container process to die")
        wait_until(
            lambda: (
                suite.processes()["runtime"] != old
                and suite.ctr("tasks", "ls", namespace=NS, check=False).returncode == 0
            ),
            30,
            what="the runtime service to restart",
        )
        waited = tasks_pb2_grpc.TasksStub(ch).Wait(
            tasks_pb2.WaitRequest(container_id="r-exit"), metadata=MD, timeout=30
        )
        assert waited.exit_status == 137  # SIGKILL, as the shim recorded it
        assert _tasks(suite)["r-exit"][1] == "STOPPED"
        wait_until(
            lambda: any(_exit_of(e, "r-exit") for e in seen), 20, what="the /tasks/exit event"
        )
        stream.cancel()
        reader.join(10)
    exits = [e for e in seen if _exit_of(e, "r-exit")]
    assert len(exits) == 1
    assert typeurl.unpack_as(exits[0].event, task_events.TaskExit).exit_status == 137
    deleted = suite.ctr("tasks", "delete", "r-exit", namespace=NS, check=False)
    assert "137" in deleted.stderr or deleted.returncode == 0
    suite.ctr("containers", "rm", "r-exit", namespace=NS)


def _drain(stream: object, into: list[events_pb2.Envelope]) -> None:
    try:
        for envelope in stream:  # type: ignore[attr-defined]
            into.append(envelope)
    except grpc.RpcError:
        pass


def _exit_of(envelope: events_pb2.Envelope, container: str) -> bool:
    return (
        envelope.topic == "/tasks/exit"
        and typeurl.unpack_as(envelope.event, task_events.TaskExit).container_id == container
    )


def test_a_container_keeps_running_across_a_restart(restart_suite: tuple[Suite, str]) -> None:
    suite, ref = restart_suite
    suite.ctr("run", "-d", ref, "r-alive", "sleep", "300", namespace=NS)
    pid, _ = _tasks(suite)["r-alive"]
    _restart_runtime(suite)
    assert _tasks(suite)["r-alive"] == (pid, "RUNNING")
    assert pid_alive(int(pid))
    out = suite.ctr(
        "tasks", "exec", "--exec-id", "after", "r-alive", "echo", "still here", namespace=NS
    )
    assert out.stdout == "still here\n"
    suite.ctr("tasks", "kill", "--signal", "SIGKILL", "r-alive", namespace=NS)
    wait_until(lambda: _tasks(suite)["r-alive"][1] == "STOPPED", 20, what="the task to stop")
    suite.ctr("tasks", "delete", "r-alive", namespace=NS, check=False)
    suite.ctr("containers", "rm", "r-alive", namespace=NS)
    assert not pid_alive(int(pid))


def test_an_oom_while_the_runtime_is_down_is_reported(
    restart_suite: tuple[Suite, str], tmp_path: Path
) -> None:
    suite, ref = restart_suite
    trigger = tmp_path / "trigger"
    trigger.mkdir()
    hog = "while [ ! -e /trigger/go ]; do sleep 0.1; done; x=$(head -c 200m /dev/zero | tr '\\0' a)"
    suite.ctr("run", "-d", "--memory-limit", str(32 << 20),
              "--mount", f"type=bind,src={trigger},dst=/trigger,options=rbind:ro",
              ref, "r-oom", "sh", "-c", hog, namespace=NS)  # fmt: skip
    pid = int(_tasks(suite)["r-oom"][0])
    with subscribed(suite, NS, "/tasks/oom", "/tasks/exit") as seen:
        old = suite.processes()["runtime"]
        os.kill(old, signal.SIGKILL)
        (trigger / "go").touch()  # the OOM kill happens while nobody in berth listens
        wait_until(lambda: not pid_alive(pid), 30, what="the OOM killer to end the container")
        wait_until(lambda: ooms_of(seen, "r-oom") > 0 and exits_of(seen, "r-oom"), 30,
                   what="/tasks/oom and /tasks/exit once the runtime is back")  # fmt: skip
    assert exits_of(seen, "r-oom") == [137]
    suite.ctr("tasks", "delete", "r-oom", namespace=NS, check=False)
    suite.ctr("containers", "rm", "r-oom", namespace=NS)


def test_fifty_containers_at_once_and_nothing_left(restart_suite: tuple[Suite, str]) -> None:
    suite, ref = restart_suite
    names = [f"many-{i}" for i in range(50)]

    def run(name: str) -> None:
        suite.ctr("run", "-d", ref, name, "sleep", "300", namespace=NS, timeout=180)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(run, names))
    running = _tasks(suite)
    assert all(running[n][1] == "RUNNING" for n in names)
    pids = [int(running[n][0]) for n in names]

    def teardown(name: str) -> None:
        suite.ctr("tasks", "kill", "--signal", "SIGKILL", name, namespace=NS)
        suite.ctr("tasks", "delete", name, namespace=NS, check=False)
        suite.ctr("containers", "rm", name, namespace=NS)

    wait_until(lambda: True, 0)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(_retrying(teardown), names))
    assert not any(pid_alive(p) for p in pids)
    assert _tasks(suite) == {}
    with open("/proc/mounts") as f:
        mounts = f.read()
    assert str(suite.state / "runtime") not in mounts
    task_root = suite.state / "runtime" / "tasks" / NS
    assert not task_root.exists() or list(task_root.iterdir()) == []
    for name in names:
        assert not os.path.exists(f"/sys/fs/cgroup/pids/{NS}/{name}")
    wait_until(lambda: not processes_in(suite.state / "runtime" / "tasks"), 15,
               what="every shim to exit")  # fmt: skip


def _retrying(fn: object) -> object:
    """Delete right after kill can race the exit; ctr users retry the same way."""

    def run(name: str) -> None:
        def done() -> bool:
            try:
                fn(name)  # type: ignore[operator]
            except AssertionError:
                return False
            return True

        wait_until(done, 30, interval=0.2, what=f"teardown of {name}")

    return run
