"""Checkpoint and restore through criu with Debian's ctr: the counter keeps counting.

The checkpoint travels as containerd does it: an image in the content store, which can
be pushed to a registry, pulled back into an empty namespace and restored again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.harness import Suite, wait_until
from tests.testimages import Registry

NS = "checkpoint"
CRIU = "/opt/berth/bin/criu"
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; sleep 0.1; done"

pytestmark = pytest.mark.skipif(
    not os.access(CRIU, os.X_OK) and shutil.which("criu") is None,
    reason="criu is not installed (scripts/install.sh brings it)",
)


def ctr(
    suite: Suite, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return suite.ctr(*args, namespace=NS, check=check, timeout=timeout)


def count(suite: Suite, container: str) -> int:
    result = ctr(suite, "tasks", "exec", "--exec-id", f"read-{time.monotonic_ns()}", container,
                 "cat", "/count", check=False)  # fmt: skip
    return int(result.stdout.strip() or 0) if result.returncode == 0 else 0


def counting_past(suite: Suite, container: str, floor: int) -> int:
    """Waits until the counter in `container` is past `floor`, and returns it."""
    return int(wait_until(lambda: (n := count(suite, container)) > floor and n, 30,
                          interval=0.3, what=f"{container}'s counter to pass {floor}"))  # fmt: skip


def remove(suite: Suite, container: str) -> None:
    ctr(suite, "tasks", "kill", "-s", "SIGKILL", container, check=False)
    wait_until(
        lambda: ctr(suite, "tasks", "delete", container, check=False).returncode == 0
        or container not in ctr(suite, "tasks", "ls").stdout,
        30, what=f"{container}'s task to go",
    )  # fmt: skip
    ctr(suite, "containers", "delete", container)


@pytest.fixture(scope="module")
def busybox(suite: Suite, registry: Registry) -> str:
    ref = registry.ref("busybox")
    ctr(suite, "images", "pull", "--plain-http", ref)
    return ref


def test_task_checkpoint_and_restore_carries_on_counting(
    suite: Suite, busybox: str, registry: Registry
) -> None:
    ctr(suite, "run", "-d", busybox, "cp-src", "sh", "-c", COUNTER)
    before = counting_past(suite, "cp-src", 5)
    checkpoint_ref = "berth.test/checkpoint/cp-src:1"
    ctr(suite, "containers", "checkpoint", "--rw", "--task", "--image", "cp-src", checkpoint_ref)
    assert checkpoint_ref in ctr(suite, "images", "ls", "-q").stdout.split()
    remove(suite, "cp-src")  # the checkpoint alone must be enough

    ctr(suite, "containers", "restore", "--rw", "--live", "cp-dst", checkpoint_ref)
    tasks = ctr(suite, "tasks", "ls").stdout
    assert "cp-dst" in tasks and "RUNNING" in tasks
    # A fresh start would count from 1: carrying on past the checkpoint means the
    # memory of the shell came back, not just the file.
    resumed = counting_past(suite, "cp-dst", before)
    assert resumed > before
    remove(suite, "cp-dst")

    # To a registry and back, with nothing left locally in between.
    remote = registry.ref("checkpoint-cp-src")
    ctr(suite, "images", "tag", checkpoint_ref, remote)
    ctr(suite, "images", "push", "--plain-http", remote)
    ctr(suite, "images", "rm", "--sync", checkpoint_ref, remote)
    assert ctr(suite, "images", "ls", "-q").stdout.split() == [busybox]
    # `ctr images pull` would try to unpack the index, which fails for checkpoints just as
    # it does with containerd; `content fetch` brings the image without unpacking it.
    ctr(suite, "content", "fetch", "--plain-http", remote)
    assert remote in ctr(suite, "images", "ls", "-q").stdout.split()
    ctr(suite, "containers", "restore", "--rw", "--live", "cp-again", remote)
    assert counting_past(suite, "cp-again", before) > before
    remove(suite, "cp-again")


def test_checkpoint_without_task_is_a_clear_error(suite: Suite, busybox: str) -> None:
    ctr(suite, "containers", "create", busybox, "cp-idle", "true")
    try:
        result = ctr(suite, "tasks", "checkpoint", "cp-idle", check=False)
        assert result.returncode != 0
        assert "not found" in result.stderr
    finally:
        ctr(suite, "containers", "delete", "cp-idle")
