"""Debian's ctr running containers on berth: run, exit codes, pty, exec, kill, ps, pause,
metrics, OOM events, log URIs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import stat
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.harness import CTR, Suite, pid_alive, processes_in, wait_until
from tests.integration.events_support import ooms_of, subscribed
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
        # ctr gives the container its own terminal's size (ResizePty after start; the
        # container waits for it)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        os.execvp(CTR, [CTR, "--address", suite.address, "-n", NS, "run", "-t", "--rm", busybox, "t-tty",
                        "sh", "-c", 'tty; until [ "$(stty size)" = "40 100" ]; do sleep 0.1; done; echo done'])  # fmt: skip
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
    task_dir = suite.state / "runtime" / "tasks" / NS / "t-detached"
    shim = int((task_dir / "shim.pid").read_text())
    assert processes_in(task_dir) == [shim]  # what test_nothing_left_behind relies on

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

    wait_until(lambda: not processes_in(runtime_tasks / "t-clean"), 10,
               what="the shim to exit after delete")  # fmt: skip


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


def test_oom_kill_is_reported(suite: Suite, busybox: str) -> None:
    limit = str(32 << 20)
    with subscribed(suite, NS, "/tasks/oom") as seen:
        fits = ctr(suite, "run", "--rm", "--memory-limit", limit, busybox, "t-fits",
                   "sh", "-c", "x=$(head -c 1m /dev/zero | tr '\\0' a); echo fits")  # fmt: skip
        assert fits.stdout == "fits\n"
        # The shell keeps 200 MB in a variable: the kernel's OOM killer must end it.
        hog = ctr(suite, "run", "--rm", "--memory-limit", limit, busybox, "t-oom",
                  "sh", "-c", "x=$(head -c 200m /dev/zero | tr '\\0' a); echo survived",
                  check=False)  # fmt: skip
        assert hog.returncode == 137, hog.stderr
        assert "survived" not in hog.stdout
        wait_until(lambda: ooms_of(seen, "t-oom") > 0, 20, what="/tasks/oom for t-oom")
    assert ooms_of(seen, "t-fits") == 0  # a container that fits, or goes away, is no OOM


def test_log_uri_file(suite: Suite, busybox: str, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "t-logfile.log"  # the directory is made as containerd does
    result = ctr(suite, "run", "--rm", "--log-uri", f"file://{log}", busybox, "t-logfile",
                 "sh", "-c", "echo to-out; echo to-err >&2; exit 3", check=False)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert sorted(log.read_text().splitlines()) == ["to-err", "to-out"]
    ctr(suite, "run", "--rm", "--log-uri", f"file://{log}", busybox, "t-logfile", "echo", "again")
    assert log.read_text().splitlines()[-1] == "again"  # appended, never truncated


CRI_RECORD = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([FP]) (.*)\Z")


def test_log_uri_file_in_cri_format(suite: Suite, busybox: str, tmp_path: Path) -> None:
    log = tmp_path / "pods" / "t-crilog.log"
    script = (
        "echo to-out; echo to-err >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; "
        "printf no-newline"
    )
    ctr(suite, "run", "--rm", "--log-uri", f"file://{log}?format=cri", busybox, "t-crilog",
        "sh", "-c", script)  # fmt: skip
    records = [CRI_RECORD.match(line) for line in log.read_text().splitlines()]
    assert all(records), log.read_text()[:500]
    parsed = [(m.group(2), m.group(3), m.group(4)) for m in records if m]
    assert ("stdout", "F", "to-out") in parsed and ("stderr", "F", "to-err") in parsed
    out = [p for p in parsed if p[0] == "stdout"]
    # 20000 x's: one partial record of 16 KiB, then the rest as the line's end.
    assert ("stdout", "P", "x" * 16384) in out
    assert out[out.index(("stdout", "P", "x" * 16384)) + 1] == ("stdout", "F", "x" * 3616)
    assert out[-1] == ("stdout", "F", "no-newline")
    stamps = [m.group(1) for m in records if m]
    assert stamps == sorted(stamps)

    bad = ctr(suite, "run", "--rm", "--log-uri", f"file://{log}?format=json", busybox,
              "t-crilog", "true", check=False)  # fmt: skip
    assert bad.returncode != 0 and "unknown log format" in bad.stderr


LOGGER = """#!/bin/sh
# A logging binary as containerd runs them: stdout on fd 3, stderr on fd 4, fd 5
# closed once ready; the URI's query comes as arguments ("dir" "<where>").
out="$2"
echo "$CONTAINER_NAMESPACE $CONTAINER_ID $*" > "$out/meta"
env > "$out/env"
exec 5>&-
/bin/cat <&3 > "$out/stdout" &
/bin/cat <&4 > "$out/stderr" &
wait
"""


def test_log_uri_binary(suite: Suite, busybox: str, tmp_path: Path) -> None:
    logger = tmp_path / "logger.sh"
    logger.write_text(LOGGER)
    logger.chmod(logger.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    out.mkdir()
    uri = f"binary://{logger}?dir={out}"
    result = ctr(suite, "run", "--rm", "--log-uri", uri, busybox, "t-logbin",
                 "sh", "-c", "echo to-out; echo to-err >&2; exit 4", check=False)  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert result.stdout == ""
    assert (out / "meta").read_text() == f"{NS} t-logbin dir {out}\n"
    # containerd gives the binary these two variables and nothing else
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines())
    assert (env["CONTAINER_ID"], env["CONTAINER_NAMESPACE"]) == ("t-logbin", NS)
    assert "BERTH_TEST_MARKER" not in env and "HOME" not in env
    assert (out / "stdout").read_text() == "to-out\n"
    assert (out / "stderr").read_text() == "to-err\n"

    missing = ctr(suite, "run", "--rm", "--log-uri", f"binary://{tmp_path}/no-such-logger",
                  busybox, "t-nologger", "true", check=False)  # fmt: skip
    assert missing.returncode != 0
    assert "no-such-logger" in missing.stderr
    unknown = ctr(suite, "run", "--rm", "--log-uri", "ftp://host/x", busybox, "t-ftplog", "true",
                  check=False)  # fmt: skip
    assert unknown.returncode != 0
    assert "unknown stdio scheme" in unknown.stderr
    for name in ("t-nologger", "t-ftplog"):
        ctr(suite, "containers", "rm", name, check=False)
    assert "t-nologger" not in tasks(suite) and "t-ftplog" not in tasks(suite)


def test_run_with_a_rootfs_directory(suite: Suite, tmp_path: Path) -> None:
    """`ctr run --rootfs DIR`: no snapshot, the spec's root path is the directory itself."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for d in ("proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    (root / "marker").write_text("from a directory\n")
    out = ctr(suite, "run", "--rm", "--rootfs", str(root), "t-rootfs",
              "/bin/busybox", "cat", "/marker")  # fmt: skip
    assert out.stdout == "from a directory\n"
