"""Unpacking an image's layers into snapshots, keyed by chain ID (containerd's rootfs.ApplyLayers).

Each layer becomes a committed snapshot named by its chain ID, so a layer
shared with an image unpacked before is found by ``stat`` and not applied
again. Works with any Snapshotter and Applier: local objects, or proxies to
the snapshots service.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.diff import Applier, Descriptor
from shared.errors import AlreadyExists, DataLoss, NotFound
from shared.snapshots import LABEL_TARGET_REF, Snapshotter


@dataclass(frozen=True)
class Layer:
    blob: Descriptor  # the (compressed) layer as stored
    diff_id: str  # sha256 of its uncompressed tar, from the image config


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            joined = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(joined).hexdigest())
    return chains


def apply_layers(
    snapshotter: Snapshotter,
    applier: Applier,
    layers: Sequence[Layer],
    labels: Mapping[str, str] | None = None,
) -> str:
    """Make sure every layer is a committed snapshot; returns the top chain ID."""
    parent = ""
    for layer, chain in zip(layers, chain_ids([lay.diff_id for lay in layers]), strict=True):
        try:
            snapshotter.stat(chain)
        except NotFound:
            apply_layer(snapshotter, applier, layer, chain, parent, labels)
        parent = chain
    return parent


def apply_layer(
    snapshotter: Snapshotter,
    applier: Applier,
    layer: Layer,
    chain: str,
    parent: str,
    labels: Mapping[str, str] | None = None,
) -> None:
    key = f"extract-{time.time_ns()}-{secrets.token_hex(4)} {chain}"
    mounts = snapshotter.prepare(key, parent, {**(labels or {}), LABEL_TARGET_REF: chain})
    try:
        applied = applier.apply(layer.blob, mounts)
        if applied.digest != layer.diff_id:
            raise DataLoss(
                f"layer {layer.blob.digest}: unpacked to {applied.digest}, "
                f"but the image says {layer.diff_id}"
            )
        snapshotter.commit(chain, key, labels)
    except AlreadyExists:
        # Someone else committed the same chain meanwhile: theirs is as good.
        snapshotter.remove(key)
    except BaseException:
        snapshotter.remove(key)
        raise
