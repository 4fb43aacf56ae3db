"""The README's quick start, run line by line as a newcomer would after the install command.

Only the places move: /run/berth and /var/lib/berth become a temporary directory, so the
test never touches a berth the machine may be running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.harness import REPO, pid_alive, remove_tasks, short_tempdir, wait_until


def quick_start_lines() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run it", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's 'Run it' section has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_quick_start_runs_a_container() -> None:
    lines = quick_start_lines()
    assert any("berthd" in line for line in lines) and any("run --rm" in line for line in lines)
    home = short_tempdir("berth-qs-")
    state, root = home / "state", home / "root"
    script = "\n".join(
        line.replace("/run/berth", str(state)).replace("/tmp/busybox.tar", str(home / "bb.tar"))
        for line in lines
    )
    env = {**os.environ, "BERTH_ROOT": str(root), "BERTH_STATE": str(state)}
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "hello from berth"
    finally:
        stop_berthd(state)
        subprocess.run(["rm", "-rf", str(home)], check=False)


def stop_berthd(state: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        pid = int((state / "berthd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 60, what="berthd to stop")
    remove_tasks(state)
