"""The container record contract (containerd's containers package).

A container is metadata only: the OCI spec (as containerd carries it, JSON in
an ``Any``), the runtime to use, the snapshot that is its root filesystem.
Running it is a *task* (``services.runtime``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_RUNTIME = "io.containerd.runc.v2"


@dataclass(frozen=True)
class AnyValue:
    """A protobuf ``Any`` kept as it came (containerd's typeurl form)."""

    type_url: str = ""
    value: bytes = b""


@dataclass(frozen=True)
class Container:
    id: str
    runtime_name: str = DEFAULT_RUNTIME
    runtime_options: AnyValue = field(default_factory=AnyValue)
    spec: AnyValue = field(default_factory=AnyValue)
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    snapshotter: str = ""
    snapshot_key: str = ""
    extensions: Mapping[str, AnyValue] = field(default_factory=dict)
    sandbox: str = ""
    created_at: int = 0
    updated_at: int = 0
