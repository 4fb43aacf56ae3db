"""docs/client.md runs: every Python block, in order, as one script against a suite of its own
and the test registry (``REGISTRY`` in the guide is its repository prefix)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, Suite
from tests.testimages import Registry

GUIDE = REPO / "docs" / "client.md"
CRIU = "/opt/berth/bin/criu"

pytestmark = pytest.mark.skipif(
    not os.access(CRIU, os.X_OK) and shutil.which("criu") is None,
    reason="criu is not installed (scripts/install.sh brings it); the guide checkpoints",
)


def guide_script(registry: Registry) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    assert len(blocks) > 15, "the guide lost its examples"
    return "\n".join(blocks).replace("REGISTRY/", f"{registry.address}/testimages/")


def test_every_example_of_the_guide_runs(
    fresh_suite: Suite, registry: Registry, tmp_path: Path
) -> None:
    script = tmp_path / "guide.py"
    script.write_text(guide_script(registry))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, cwd=REPO,
        env={**os.environ, "BERTH_ADDRESS": fresh_suite.address, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert "hello from redis-master\n" in out
    assert "exited with 0" in out
    assert re.search(r"attached as \['10\.231\.7\.(\d+)/24'\] and saw 10\.231\.7\.\1/24", out)
    assert "killed: 137" in out
    restored = int(re.search(r"the restored counter is at (\d+)", out).group(1))  # type: ignore[union-attr]
    assert restored > 5  # a fresh start would be at 1 or so
    assert "TaskExit" in out
    assert "type='content'" in out and "leases left: []" in out
    assert "not found:" in out and "invalid:" in out and "cannot reach berth" in out
    # The guide cleans up after itself.
    listing = fresh_suite.ctr("containers", "ls", "-q").stdout.split()
    assert listing == []
