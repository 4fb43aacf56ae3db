"""Version strings berth reports.

``Version.Version`` answers with containerd's API level plus berth's own
version as semver build metadata (``1.7.24+berth.0.1.0``): tools that parse
the version as semver (nerdctl) see a 1.7 server, people see berth.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

BERTH_VERSION = "0.1.0"
CONTAINERD_API_VERSION = "1.7.24"


def server_version() -> str:
    return f"{CONTAINERD_API_VERSION}+berth.{BERTH_VERSION}"


@functools.cache
def revision() -> str:
    """The git commit berth runs from, when it runs from a checkout."""
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()
