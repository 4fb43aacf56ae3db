"""The snapshotter contract: node-local filesystem trees for containers and layers.

This module knows nothing of gRPC, NATS or SQL. Implementations:

* ``services.snapshots.snapshotter.Snapshotter`` - one per backend (overlayfs,
  native, btrfs), with namespaces and labels kept in the database;
* ``shared.proxy.snapshots.SnapshotterProxy`` - the same contract over gRPC
  (a peer's snapshots service, or an external ``[proxy_plugins]`` snapshotter).

The namespace (and lease) of a call come from ``shared.context``; keys are
unique per namespace, and a namespace never sees another's snapshots.

Snapshots have three kinds. An *active* snapshot is writable; a *view* is a
read-only look at a committed snapshot; a *committed* snapshot is immutable
and may be the parent of others. Parents are always named by their committed
name. Mounts are returned as records (``Mount``) that the caller mounts; a
snapshotter never mounts on its caller's behalf.

Importing a layer (what unpack does)::

    mounts = sn.prepare("extract-<random> sha256:<chainID>", parent="sha256:<parentChainID>")
    # apply the layer onto the mounts (Diff.Apply), then:
    sn.commit("sha256:<chainID>", "extract-<random> sha256:<chainID>")
    # on failure: sn.remove("extract-...") - the key is gone either way

Running a container::

    mounts = sn.prepare("<container id>", parent="sha256:<top chainID>")
    # mount and run; later
    sn.remove("<container id>")

Edge cases, as containerd:

* ``prepare``/``view`` with a key that exists: AlreadyExists. A parent that
  does not exist: NotFound; a parent that is not committed: InvalidArgument.
* ``commit`` of a key that is not active: FailedPrecondition (views cannot be
  committed); a name that exists: AlreadyExists. The active key is gone after
  a successful commit.
* ``remove`` of a snapshot that has children: FailedPrecondition.
* ``stat`` of an unknown key: NotFound (clients branch on it: unpack checks
  ``stat(chainID)`` before doing any work).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Labels with meaning to snapshotters (containerd's snapshots/snapshotter.go).
LABEL_TARGET_REF = "containerd.io/snapshot.ref"  # the chain ID an unpack is making
INHERITED_LABEL_PREFIX = "containerd.io/snapshot/"  # passed to the backend on prepare


class Kind(enum.IntEnum):
    # Values are the wire enum's (containerd.services.snapshots.v1.Kind).
    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclass(frozen=True)
class Mount:
    """One mount(2) call: ``mount -t <type> <source> <target> -o <options>``."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Info:
    name: str  # the key, or the committed name
    parent: str
    kind: Kind
    created_at: int  # nanoseconds since the epoch
    updated_at: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    size: int  # bytes this snapshot adds over its parent
    inodes: int


class Snapshotter(Protocol):
    """One named snapshotter (``overlayfs``, ``native``, ...) seen from one namespace."""

    @property
    def name(self) -> str: ...

    def stat(self, key: str) -> Info: ...

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Change labels (``labels``, ``labels.<key>``; none means all labels)."""
        ...

    def usage(self, key: str) -> Usage:
        """Disk used by ``key`` over its parent; computed at commit for committed snapshots."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or a view (NotFound otherwise)."""
        ...

    def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]: ...

    def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]: ...

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None: ...

    def remove(self, key: str) -> None: ...

    def walk(self, filters: Sequence[str] = ()) -> Iterator[Info]:
        """Every snapshot of the namespace matching the filters (``kind``, ``name``,
        ``parent``, ``labels.<key>``)."""
        ...

    def cleanup(self) -> None:
        """Remove on-disk leftovers that no snapshot references (after crashes)."""
        ...
