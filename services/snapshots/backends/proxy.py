"""A ``[proxy_plugins]`` snapshotter: records here, the filesystem work in an external service.

As in containerd, berth's records sit in front of the external snapshotter,
which sees keys that name the namespace and record (``<ns>/<id>/<key>``),
never a bare client key, so names cannot collide between namespaces.
"""

from __future__ import annotations

from pathlib import Path

from services.snapshots.storage import Record
from shared.proxy.snapshots import SnapshotterProxy
from shared.snapshots import INHERITED_LABEL_PREFIX, LABEL_TARGET_REF, Kind, Mount, Usage


def external_key(record: Record) -> str:
    return f"{record.namespace}/{record.id}/{record.key}"


class ProxyBackend:
    def __init__(self, remote: SnapshotterProxy) -> None:
        self.remote = remote

    def stage(self, kind: Kind, parents: list[Record]) -> Path | None:
        return None

    def install(self, staged: Path | None, record: Record, parents: list[Record]) -> None:
        # Remote snapshotters use these labels to find layers they already have.
        labels = {
            k: v
            for k, v in record.labels.items()
            if k.startswith(INHERITED_LABEL_PREFIX) or k == LABEL_TARGET_REF
        }
        parent = external_key(parents[0]) if parents else ""
        if record.kind == Kind.VIEW:
            self.remote.view(external_key(record), parent, labels)
        else:
            self.remote.prepare(external_key(record), parent, labels)

    def discard(self, staged: Path | None) -> None:
        pass

    def mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        return self.remote.mounts(external_key(record))

    def usage(self, record: Record, parents: list[Record]) -> Usage:
        return self.remote.usage(external_key(record))

    def commit(self, active: Record, committed: Record) -> None:
        self.remote.commit(external_key(committed), external_key(active))

    def remove(self, record: Record) -> None:
        self.remote.remove(external_key(record))

    def cleanup(self, known_ids: set[int]) -> list[str]:
        self.remote.cleanup()
        return []
