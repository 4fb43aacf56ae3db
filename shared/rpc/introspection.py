"""``containerd.services.introspection.v1.Introspection`` over a plugin list.

Every process serves this for its own plugins on its own socket; the gateway
serves the joined list on the client socket.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.rpc import status_pb2

from shared import filters
from shared.api.containerd.services.introspection.v1 import (
    introspection_pb2,
    introspection_pb2_grpc,
)
from shared.api.containerd.types import platform_pb2
from shared.errors import InvalidArgument
from shared.plugins import Plugin

UNKNOWN = 2  # google.rpc.Code.UNKNOWN


def plugin_to_proto(plugin: Plugin) -> introspection_pb2.Plugin:
    msg = introspection_pb2.Plugin(
        type=plugin.type,
        id=plugin.id,
        requires=list(plugin.requires),
        platforms=[
            platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant)
            for p in plugin.platforms
        ],
        exports=dict(plugin.exports),
        capabilities=list(plugin.capabilities),
    )
    if plugin.init_error:
        msg.init_err.CopyFrom(status_pb2.Status(code=UNKNOWN, message=plugin.init_error))
    return msg


class PluginAdaptor:
    """Filter fields of a plugin: ``type``, ``id``, ``platforms``, ``capabilities``."""

    def __init__(self, plugin: introspection_pb2.Plugin) -> None:
        self._plugin = plugin

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "type":
            return self._plugin.type, bool(self._plugin.type)
        if head == "id":
            return self._plugin.id, bool(self._plugin.id)
        if head == "platforms":
            # Matches if any platform matches, as containerd's adaptor does via a joined value.
            values = [
                "/".join(x for x in (p.os, p.architecture, p.variant) if x)
                for p in self._plugin.platforms
            ]
            return ",".join(values), bool(values)
        if head == "capabilities":
            return ",".join(self._plugin.capabilities), bool(self._plugin.capabilities)
        return "", False


def select(
    plugins: Iterable[introspection_pb2.Plugin], exprs: Sequence[str]
) -> list[introspection_pb2.Plugin]:
    try:
        match = filters.parse_all(list(exprs))
    except filters.FilterSyntaxError as e:
        raise InvalidArgument(f"invalid plugin filter: {e}") from e
    return [p for p in plugins if match.match(PluginAdaptor(p))]


def server_uuid(root: Path) -> str:
    """A stable id for this installation, kept under the root as containerd does."""
    path = root / "io.containerd.grpc.v1.introspection" / "uuid"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = str(uuid.uuid4())
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(value)
        try:
            os.link(tmp, path)  # first writer wins when several processes race
        except FileExistsError:
            value = path.read_text().strip()
        finally:
            tmp.unlink()
        return value


def server_response(root: Path) -> introspection_pb2.ServerResponse:
    return introspection_pb2.ServerResponse(
        uuid=server_uuid(root),
        pid=os.getpid(),
        pidns=os.stat("/proc/self/ns/pid").st_ino,
    )


class IntrospectionServicer(introspection_pb2_grpc.IntrospectionServicer):
    def __init__(self, plugins: Callable[[], list[Plugin]], root: Path) -> None:
        self._plugins = plugins
        self._root = root

    async def Plugins(
        self, request: introspection_pb2.PluginsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> introspection_pb2.PluginsResponse:
        protos = [plugin_to_proto(p) for p in self._plugins()]
        return introspection_pb2.PluginsResponse(plugins=select(protos, request.filters))

    async def Server(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> introspection_pb2.ServerResponse:
        return server_response(self._root)
