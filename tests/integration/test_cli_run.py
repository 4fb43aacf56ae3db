"""The berth CLI running containers on a real suite, as a user would: run with the process's
output and exit status, stdin, a terminal, detached tasks driven with `tasks`, exec, the
container listings as a table and as JSON, removal, events seen by a background `berth
events`, and ctr's flags (env, mounts, read-only roots, crun, log URIs)."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Suite, pid_alive, wait_until
from tests.integration.cli_support import BERTH, berth, berth_in_terminal, environment
from tests.integration.cni_support import PLUGIN_DIR, bridge_network, have_cni
from tests.testimages import Registry

NS = "cli-run"


@pytest.fixture(scope="module")
def busybox(suite: Suite, registry: Registry) -> Iterator[str]:
    ref = registry.ref("busybox")
    berth(suite, "images", "pull", "-q", ref, namespace=NS)
    yield ref
    for task in berth(suite, "tasks", "ls", "-q", namespace=NS).stdout.split():
        berth(suite, "tasks", "rm", "-f", task, namespace=NS, check=False)
    for container in berth(suite, "containers", "ls", "-q", namespace=NS).stdout.split():
        berth(suite, "containers", "rm", container, namespace=NS, check=False)


def run(suite: Suite, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return berth(suite, "run", *args, namespace=NS, **kwargs)  # type: ignore[arg-type]


def containers(suite: Suite) -> list[str]:
    return berth(suite, "containers", "ls", "-q", namespace=NS).stdout.split()


def tasks(suite: Suite) -> dict[str, dict[str, object]]:
    listed = json.loads(berth(suite, "tasks", "ls", "--format", "json", namespace=NS).stdout)
    return {t["id"]: t for t in listed}


def snapshots(suite: Suite) -> list[str]:
    listed = json.loads(berth(suite, "snapshots", "ls", "--format", "json", namespace=NS).stdout)
    return [s["name"] for s in listed]


def test_run_prints_the_output_and_removes_everything(suite: Suite, busybox: str) -> None:
    result = run(suite, "--rm", busybox, "r-echo", "echo", "hello from berth")
    assert result.stdout == "hello from berth\n"
    assert result.stderr == ""
    assert "r-echo" not in containers(suite)
    assert "r-echo" not in snapshots(suite)


def test_the_exit_status_is_berths(suite: Suite, busybox: str) -> None:
    result = run(suite, "--rm", busybox, "r-exit", "sh", "-c", "echo err >&2; exit 7", check=False)
    assert result.returncode == 7
    assert result.stderr == "err\n"
    high = run(suite, "--rm", busybox, "r-exit", "sh", "-c", "exit 255", check=False)
    assert high.returncode == 255


def test_stdin_is_piped_in(suite: Suite, busybox: str) -> None:
    result = run(suite, "--rm", busybox, "r-stdin", "sh", "-c", "wc -c", input="twelve bytes")
    assert result.stdout.strip() == "12"


def test_without_rm_the_container_stays(suite: Suite, busybox: str) -> None:
    run(suite, busybox, "r-keep", "true")
    assert "r-keep" in containers(suite)
    assert "r-keep" not in tasks(suite)  # run deletes the task it ran
    taken = run(suite, busybox, "r-keep", "true", check=False)
    assert taken.returncode == 125
    assert taken.stderr.startswith("berth: ") and "already exists" in taken.stderr
    assert berth(suite, "containers", "rm", "r-keep", namespace=NS).stdout == ""
    assert "r-keep" not in containers(suite)
    assert "r-keep" not in snapshots(suite)


def test_terminal(suite: Suite, busybox: str) -> None:
    session = berth_in_terminal(
        suite, "run", "-t", "--rm", busybox, "r-tty", "sh", "-c", "tty; stty size; exit 3",
        namespace=NS, columns=100, lines=40,
    )  # fmt: skip
    assert "/dev/pts/" in session.text
    assert "40 100" in session.text  # our window's size, passed on
    assert session.code == 3


def test_detached_then_tasks_ls_exec_ps_pause_kill_rm(suite: Suite, busybox: str) -> None:
    result = run(suite, "-d", busybox, "r-detached", "sleep", "600")
    assert result.stdout == "" and result.stderr == ""
    task = tasks(suite)["r-detached"]
    assert task["status"] == "RUNNING"
    pid = int(str(task["pid"]))
    assert pid_alive(pid)
    table = berth(suite, "tasks", "ls", namespace=NS).stdout.splitlines()
    assert table[0].split() == ["TASK", "PID", "STATUS"]
    assert ["r-detached", str(pid), "RUNNING"] in [line.split() for line in table[1:]]

    exec_ = berth(suite, "tasks", "exec", "r-detached", "echo", "from exec", namespace=NS)
    assert exec_.stdout == "from exec\n"
    failed = berth(suite, "tasks", "exec", "--exec-id", "e3", "r-detached", "sh", "-c", "exit 3",
                   namespace=NS, check=False)  # fmt: skip
    assert failed.returncode == 3
    cwd = berth(suite, "tasks", "exec", "--cwd", "/etc", "r-detached", "pwd", namespace=NS)
    assert cwd.stdout == "/etc\n"

    ps = berth(suite, "tasks", "ps", "--format", "json", "r-detached", namespace=NS).stdout
    assert {"pid": pid, "exec_id": ""} in json.loads(ps)

    berth(suite, "tasks", "pause", "r-detached", namespace=NS)
    assert tasks(suite)["r-detached"]["status"] == "PAUSED"
    berth(suite, "tasks", "resume", "r-detached", namespace=NS)
    assert tasks(suite)["r-detached"]["status"] == "RUNNING"

    metrics = json.loads(
        berth(suite, "tasks", "metrics", "--format", "json", "r-detached", namespace=NS).stdout
    )
    assert metrics["pids"]["current"] >= 1

    refused = berth(suite, "tasks", "rm", "r-detached", namespace=NS, check=False)
    assert refused.returncode == 1 and "running" in refused.stderr
    busy = berth(suite, "containers", "rm", "r-detached", namespace=NS, check=False)
    assert busy.returncode == 1 and "kill it first" in busy.stderr

    berth(suite, "tasks", "kill", "--signal", "KILL", "r-detached", namespace=NS)
    wait_until(lambda: tasks(suite)["r-detached"]["status"] == "STOPPED", 30, what="the kill")
    removed = berth(suite, "tasks", "rm", "r-detached", namespace=NS)
    assert "exited with status 137" in removed.stderr
    assert "r-detached" not in tasks(suite)
    assert not pid_alive(pid)
    berth(suite, "containers", "rm", "r-detached", namespace=NS)
    assert "r-detached" not in containers(suite)


def test_create_then_start(suite: Suite, busybox: str) -> None:
    berth(suite, "containers", "create", "--env", "WHO=created", busybox, "r-created",
          "sh", "-c", "echo hello $WHO", namespace=NS)  # fmt: skip
    assert "r-created" in containers(suite)
    started = berth(suite, "tasks", "start", "r-created", namespace=NS)
    assert started.stdout == "hello created\n"
    berth(suite, "containers", "rm", "r-created", namespace=NS)


def test_containers_ls_and_info(suite: Suite, busybox: str) -> None:
    run(suite, "--label", "team=berth", busybox, "r-listed", "true")
    try:
        table = berth(suite, "containers", "ls", namespace=NS).stdout.splitlines()
        assert table[0].split() == ["CONTAINER", "IMAGE", "RUNTIME"]
        assert ["r-listed", busybox, "io.containerd.runc.v2"] in [r.split() for r in table[1:]]

        listed = json.loads(
            berth(suite, "containers", "ls", "--format", "json", "labels.team==berth",
                  namespace=NS).stdout
        )  # fmt: skip
        assert [c["id"] for c in listed] == ["r-listed"]
        assert listed[0]["image"] == busybox
        assert listed[0]["labels"]["team"] == "berth"
        assert listed[0]["snapshot_key"] == "r-listed"

        info = json.loads(berth(suite, "containers", "info", "r-listed", namespace=NS).stdout)
        assert info["spec"]["process"]["args"] == ["true"]
        assert info["labels"]["io.containerd.image.config.stop-signal"] == "SIGTERM"
        spec = json.loads(
            berth(suite, "containers", "info", "--spec", "r-listed", namespace=NS).stdout
        )
        assert spec == info["spec"]

        labels = berth(suite, "containers", "label", "r-listed", "team=", "x=y", namespace=NS)
        assert "team=" not in labels.stdout and "x=y" in labels.stdout
    finally:
        berth(suite, "containers", "rm", "r-listed", namespace=NS)


def test_flags_shape_the_container(suite: Suite, busybox: str, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "note").write_text("from the host")
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=yes\n")
    script = (
        "echo $GREETING $FROM_FILE; cat /host/note; echo; pwd; hostname; id -u;"
        " touch /host/new 2>/dev/null && echo writable || echo read-only"
    )
    result = run(
        suite, "--rm", "--env", "GREETING=hi", "--env-file", str(env_file),
        "--mount", f"type=bind,src={tmp_path / 'shared'},dst=/host,options=rbind:ro",
        "--cwd", "/tmp", "--hostname", "cli-host", "--user", "1000",
        "--memory-limit", "64m", busybox, "r-flags", "sh", "-c", script,
    )  # fmt: skip
    assert result.stdout.splitlines() == [
        "hi yes", "from the host", "/tmp", "cli-host", "1000", "read-only"
    ]  # fmt: skip


def test_crun_and_a_log_file(suite: Suite, busybox: str, tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    result = run(suite, "--rm", "--runc-binary", "crun", "--log-uri", f"file://{log}", busybox,
                 "r-crun", "sh", "-c", "echo logged; cat /proc/self/cgroup")  # fmt: skip
    assert result.stdout == ""
    assert log.read_text().startswith("logged\n")


def test_events_in_the_background_see_a_container_made(suite: Suite, busybox: str) -> None:
    with subprocess.Popen(
        [BERTH, "events", "--format", "json", f"namespace=={NS}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(suite),
    ) as events:  # fmt: skip
        seen, stderr = _follow_events(events, suite, busybox)
    created = next(
        e for e in seen if e["topic"] == "/containers/create" and e["event"]["id"] == "r-evented"
    )
    assert created["namespace"] == NS
    assert created["event"]["image"] == busybox
    assert created["timestamp"].endswith("Z")
    assert stderr == ""


def _follow_events(
    events: subprocess.Popen[str], suite: Suite, busybox: str
) -> tuple[list[dict[str, Any]], str]:
    """Make containers while ``berth events`` runs; what it printed, and its stderr."""
    seen: list[dict[str, Any]] = []

    def read() -> None:
        assert events.stdout is not None
        for line in events.stdout:
            seen.append(json.loads(line))

    def saw(topic: str, container_id: str) -> bool:
        return any(
            e["topic"] == topic and e["event"].get("id", "").startswith(container_id)
            for e in list(seen)
        )

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    probes = 0

    def saw_a_probe() -> bool:
        # The subscription goes live some time after the start; what happens before is
        # not shown. A container made and removed until one shows says it is live.
        nonlocal probes
        probes += 1
        berth(suite, "containers", "create", busybox, f"r-probe-{probes}", "true", namespace=NS)
        berth(suite, "containers", "rm", f"r-probe-{probes}", namespace=NS)
        return saw("/containers/delete", "r-probe-")

    try:
        wait_until(saw_a_probe, 60, interval=0, what="berth events to subscribe")
        berth(suite, "containers", "create", busybox, "r-evented", "true", namespace=NS)
        wait_until(lambda: saw("/containers/create", "r-evented"), 60, what="the create event")
    finally:
        events.terminate()
        events.wait(30)
        reader.join(10)
        berth(suite, "containers", "rm", "r-evented", namespace=NS, check=False)
    assert events.stderr is not None
    return seen, events.stderr.read()


@pytest.mark.skipif(not have_cni(), reason="needs root and Debian's CNI plugins")
def test_cni_gives_the_container_an_address_the_host_reaches(
    suite: Suite, busybox: str, tmp_path: Path
) -> None:
    with bridge_network(tmp_path / "cni") as net:
        env = environment(
            suite,
            BERTH_CNI_CONF_DIR=str(net.conf_dir),
            BERTH_CNI_BIN_DIR=PLUGIN_DIR,
            BERTH_CNI_CACHE_DIR=str(net.cache_dir),
        )
        shown = run(suite, "--rm", "--cni", busybox, "r-cni-ip", "ip", "-o", "-4", "addr",
                    "show", "eth0", env=env).stdout  # fmt: skip
        assert f" {net.subnet_prefix}." in shown
        assert net.allocated() == []  # given back when the run ended

        # A detached server, reached from the host through the bridge.
        run(suite, "-d", "--cni", busybox, "r-cni-httpd", "httpd", "-f", "-p", "8080", "-h",
            "/etc", env=env)  # fmt: skip
        [address] = net.allocated()
        try:

            def answers() -> bool:
                try:
                    with urllib.request.urlopen(f"http://{address}:8080/passwd", timeout=2) as r:
                        return b"root:x:0:0" in r.read()
                except OSError:
                    return False

            wait_until(answers, 30, what="httpd in the container to answer on its CNI address")
        finally:
            berth(suite, "tasks", "rm", "-f", "r-cni-httpd", namespace=NS, env=env)
            berth(suite, "containers", "rm", "r-cni-httpd", namespace=NS, env=env)
        assert net.allocated() == []  # `tasks rm` tore the network down
        assert not any((net.cache_dir / "results").iterdir())

        # Without a network configured: one clear line before anything is made.
        (net.conf_dir / "10-berth-test.conflist").unlink()
        failed = run(suite, "--rm", "--cni", busybox, "r-cni-none", "true", env=env, check=False)
        assert failed.returncode == 125
        assert failed.stderr.strip() == (
            f"berth: no CNI network configuration in {net.conf_dir}"
        ), failed.stderr
        assert "r-cni-none" not in containers(suite)

    usage = run(suite, "--cni", "--net-host", busybox, "r-cni-host", "true", check=False)
    assert usage.returncode == 2 and "--cni and --net-host" in usage.stderr


SECCOMP_PROBE = (
    "grep Seccomp: /proc/self/status; unshare -U true && echo userns; mkdir /tmp/d && echo mkdir"
)


def test_seccomp_default_and_from_a_file(suite: Suite, busybox: str, tmp_path: Path) -> None:
    plain = run(suite, "--rm", busybox, "r-sc0", "sh", "-c", SECCOMP_PROBE, check=False)
    assert plain.stdout.split("\n")[:3] == ["Seccomp:\t0", "userns", "mkdir"], plain
    # The default profile: namespaces need CAP_SYS_ADMIN, which the container lacks.
    confined = run(suite, "--rm", "--seccomp", busybox, "r-sc1", "sh", "-c", SECCOMP_PROBE,
                   check=False)  # fmt: skip
    assert confined.stdout.split("\n")[:2] == ["Seccomp:\t2", "mkdir"], confined
    assert "Operation not permitted" in confined.stderr
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))  # fmt: skip
    custom = run(suite, "--rm", "--seccomp-profile", str(profile), busybox, "r-sc2", "sh", "-c",
                 SECCOMP_PROBE, check=False)  # fmt: skip
    assert custom.stdout.split("\n")[:2] == ["Seccomp:\t2", "userns"], custom
    assert "mkdir" not in custom.stdout.split("\n")[2:]
    bad = run(suite, "--rm", "--seccomp-profile", str(tmp_path / "absent.json"), busybox,
              "r-sc3", "true", check=False)  # fmt: skip
    assert bad.returncode == 125 and "seccomp profile" in bad.stderr  # run: berth failed
