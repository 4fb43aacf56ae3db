"""The rest of the berth CLI against a real suite: shell completion, version and plugins,
namespaces, leases, content, snapshots, and mounting an image."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Suite
from tests.integration.cli_support import BERTH, berth, environment
from tests.testimages import Images, Registry

NS = "cli-tools"


@pytest.fixture(scope="module")
def busybox(suite: Suite, registry: Registry) -> Iterator[str]:
    ref = registry.ref("busybox")
    berth(suite, "images", "pull", "-q", ref, namespace=NS)
    yield ref
    berth(suite, "images", "rm", ref, namespace=NS, check=False)


def complete(suite: Suite | None, words: str) -> list[str]:
    """What bash completion offers for the last of ``words`` (``berth ima`` -> images)."""
    parts = words.split(" ")
    env = environment(
        suite, _BERTH_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1)
    )
    result = subprocess.run([BERTH], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_completion_scripts_and_words(suite: Suite, busybox: str) -> None:
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "compdef")):
        env = environment(None, _BERTH_COMPLETE=f"{shell}_source")
        script = subprocess.run([BERTH], capture_output=True, text=True, env=env, timeout=60)
        assert script.returncode == 0
        assert marker in script.stdout and "_BERTH_COMPLETE" in script.stdout
    assert complete(None, "berth ima") == ["images"]
    assert complete(None, "berth images p") == ["pull", "push"]
    assert "--rm" in complete(None, "berth run --r")
    # Names come from the suite the options point at.
    assert complete(suite, f"berth -n {NS} images rm 127.0.0.1") == [busybox]
    assert complete(None, "berth -a /nonexistent/berth.sock images rm x") == []


def test_version_and_plugins(suite: Suite) -> None:
    text = berth(suite, "version").stdout
    assert "Client:" in text and "Server:" in text
    data = json.loads(berth(suite, "version", "--format", "json").stdout)
    assert data["server"]["version"].startswith("1.7")
    plugins = json.loads(berth(suite, "plugins", "ls", "--format", "json").stdout)
    ids = {(p["type"], p["id"]) for p in plugins}
    assert ("io.containerd.snapshotter.v1", "overlayfs") in ids
    only = berth(suite, "plugins", "ls", "-q", "type==io.containerd.snapshotter.v1").stdout
    assert "overlayfs" in only.split() and "content" not in only.split()


def test_namespaces(suite: Suite) -> None:
    berth(suite, "namespaces", "create", "cli-tools-ns", "team=berth")
    assert "cli-tools-ns" in berth(suite, "ns", "ls", "-q").stdout.split()
    listed = json.loads(berth(suite, "ns", "ls", "--format", "json").stdout)
    assert {"name": "cli-tools-ns", "labels": {"team": "berth"}} in listed
    assert berth(suite, "ns", "label", "cli-tools-ns", "team=", "x=y").stdout == "x=y\n"
    assert berth(suite, "ns", "rm", "cli-tools-ns").stdout == "cli-tools-ns\n"
    assert "cli-tools-ns" not in berth(suite, "ns", "ls", "-q").stdout.split()
    bad = berth(suite, "-n", "Not Valid", "images", "ls", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("berth: ")


def test_leases(suite: Suite) -> None:
    created = berth(suite, "leases", "create", "--id", "cli-lease", "--expires", "1h", "k=v")
    assert created.stdout == "cli-lease\n"
    listed = json.loads(berth(suite, "leases", "ls", "--format", "json", namespace=NS).stdout)
    assert listed == []  # leases are per namespace
    listed = json.loads(berth(suite, "leases", "ls", "--format", "json").stdout)
    lease = next(entry for entry in listed if entry["id"] == "cli-lease")
    assert lease["labels"]["k"] == "v"
    assert "containerd.io/gc.expire" in lease["labels"]
    assert berth(suite, "leases", "rm", "cli-lease").stdout == "cli-lease\n"
    assert "cli-lease" not in berth(suite, "leases", "ls", "-q").stdout.split()
    bad = berth(suite, "leases", "create", "--expires", "soon", check=False)
    assert bad.returncode == 2 and "invalid duration" in bad.stderr


def test_content(suite: Suite, busybox: str, testimages: Images) -> None:
    data = "bytes for the content store\n"
    digest = berth(suite, "content", "ingest", "cli-blob", input=data, namespace=NS).stdout
    digest = digest.strip()
    assert digest.startswith("sha256:")
    assert berth(suite, "content", "get", digest, namespace=NS).stdout == data
    assert berth(suite, "content", "label", digest, "a=b", namespace=NS).stdout == "a=b\n"
    listed = json.loads(berth(suite, "content", "ls", "--format", "json", namespace=NS).stdout)
    blob = next(entry for entry in listed if entry["digest"] == digest)
    assert blob["size"] == len(data) and blob["labels"] == {"a": "b"}
    layer = testimages.layers("busybox")[0].digest
    assert layer in berth(suite, "content", "ls", "-q", namespace=NS).stdout.split()
    assert berth(suite, "content", "rm", digest, namespace=NS).stdout == f"{digest}\n"
    missing = berth(suite, "content", "get", digest, namespace=NS, check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    wrong = berth(suite, "content", "ingest", "--expected-digest", "sha256:" + "0" * 64,
                  "cli-wrong", input=data, namespace=NS, check=False)  # fmt: skip
    assert wrong.returncode != 0 and wrong.stderr.startswith("berth: ")
    assert berth(suite, "content", "active", "--format", "json", "cli-blob", namespace=NS).stdout


def test_snapshots(suite: Suite, busybox: str) -> None:
    committed = [
        s
        for s in json.loads(
            berth(suite, "snapshots", "ls", "--format", "json", namespace=NS).stdout
        )
        if s["kind"] == "Committed"
    ]
    top = next(s["name"] for s in committed if not any(c["parent"] == s["name"] for c in committed))
    berth(suite, "snapshots", "prepare", "cli-active", top, namespace=NS)
    mounts = json.loads(
        berth(suite, "snapshots", "mounts", "--json", "/mnt", "cli-active", namespace=NS).stdout
    )
    assert mounts[0]["type"] in ("overlay", "bind")
    command = berth(suite, "snapshots", "mounts", "/mnt", "cli-active", namespace=NS).stdout
    assert command.startswith(f"mount -t {mounts[0]['type']} ")
    info = json.loads(berth(suite, "snapshots", "info", "cli-active", namespace=NS).stdout)
    assert info["kind"] == "Active" and info["parent"] == top
    tree = berth(suite, "snapshots", "tree", namespace=NS).stdout
    assert "\\_ cli-active" in tree
    usage = json.loads(
        berth(suite, "snapshots", "usage", "--format", "json", "cli-active", namespace=NS).stdout
    )
    assert usage[0]["name"] == "cli-active" and usage[0]["inodes"] >= 0
    berth(suite, "snapshots", "commit", "cli-committed", "cli-active", namespace=NS)
    labels = berth(suite, "snapshots", "label", "cli-committed", "x=1", namespace=NS).stdout
    assert "x=1" in labels
    berth(suite, "snapshots", "view", "cli-view", "cli-committed", namespace=NS)
    busy = berth(suite, "snapshots", "rm", "cli-committed", namespace=NS, check=False)
    assert busy.returncode == 1 and busy.stderr.startswith("berth: ")
    berth(suite, "snapshots", "rm", "cli-view", "cli-committed", namespace=NS)
    names = {s["name"] for s in json.loads(
        berth(suite, "snapshots", "ls", "--format", "json", namespace=NS).stdout)}  # fmt: skip
    assert not names & {"cli-active", "cli-committed", "cli-view"}


def test_mount_an_image(suite: Suite, busybox: str, tmp_path: Path) -> None:
    target = tmp_path / "root"
    target.mkdir()
    assert berth(suite, "images", "mount", busybox, str(target), namespace=NS).stdout == (
        f"{target}\n"
    )
    try:
        assert (target / "bin" / "busybox").exists()
        assert _read_only(target)  # a view, unless --rw
        again = berth(suite, "images", "mount", busybox, str(target), namespace=NS, check=False)
        assert again.returncode == 1 and "mounted already" in again.stderr
    finally:
        berth(suite, "images", "unmount", "--rm", str(target), namespace=NS)
    assert not (target / "bin").exists()
    keys = berth(suite, "snapshots", "ls", namespace=NS).stdout
    assert str(target) not in keys


def _read_only(path: Path) -> bool:
    try:
        (path / "probe").write_text("x")
    except OSError:
        return True
    return False
