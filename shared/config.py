"""Configuration: one containerd-shaped TOML file, overridable by environment and flags.

The file looks like containerd's ``config.toml`` with berth's own sections::

    version = 2
    root = "/var/lib/berth"          # persistent state (database, blobs, snapshots)
    state = "/run/berth"             # runtime state (sockets, task bundles, FIFOs)
    node_name = ""                   # this host in a cluster's shared database (default: hostname)

    [grpc]
    address = "/run/berth/berth.sock"    # the one client socket (the gateway)
    tcp_address = ""                     # optional extra TCP listener, host:port

    [database]
    url = ""                             # default sqlite:///<root>/berth.db

    [events]
    nats_url = ""                        # the bus; empty: berthd runs a private one
    stream = "BERTH_EVENTS"

    [tracing]
    otlp_endpoint = ""                   # e.g. http://127.0.0.1:4317
    file = ""                            # spans as JSON lines, for debugging

    [debug]
    level = "info"
    format = "json"                      # or "text"

    [services.content]                   # where each process is reached
    address = "/run/berth/services/content.sock"
    listen = ""                          # where it binds, if not address (compose: 0.0.0.0:7001)

    [plugins."io.containerd.snapshotter.v1.overlayfs"]   # per-plugin settings
    [proxy_plugins.mysnap]                               # external gRPC plugins
    type = "snapshot"
    address = "/run/mysnap.sock"

Precedence, lowest first: built-in defaults, the file, ``BERTH_*`` environment
variables, command-line flags. An environment variable names a key path with
``__`` between levels: ``BERTH_ROOT``, ``BERTH_DATABASE__URL``,
``BERTH_SERVICES__CONTENT__ADDRESS``. Values are parsed as TOML scalars when
they parse (``true``, ``16``), else taken as strings.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import topology
from shared.errors import InvalidArgument

ENV_PREFIX = "BERTH_"
DEFAULT_ROOT = "/var/lib/berth"
DEFAULT_STATE = "/run/berth"
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
# Other BERTH_* variables (BERTH_NAMESPACE, test settings) are not configuration.
_ENV_SECTIONS = frozenset(
    {
        "root",
        "state",
        "node_name",
        "grpc",
        "database",
        "events",
        "tracing",
        "debug",
        "services",
        "plugins",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """Where one process listens, and where its peers reach it."""

    address: str  # unix socket path, or host:port: where peers reach the process
    tcp_address: str = ""  # an extra TCP listener
    listen: str = ""  # where the process binds, when not ``address`` (0.0.0.0:7001 in compose)
    # False for a process this installation does not run: the gateway routes
    # its calls nowhere (UNIMPLEMENTED) and introspection leaves it out.
    enabled: bool = True

    @property
    def bind(self) -> str:
        return self.listen or self.address

    @property
    def target(self) -> str:
        """The gRPC dial target for ``address``."""
        return grpc_target(self.address)


@dataclass(frozen=True)
class ProxyPlugin:
    name: str
    type: str
    address: str
    platform: str = ""
    capabilities: tuple[str, ...] = ()
    exports: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    root: Path
    state: Path
    node_name: str
    address: str
    tcp_address: str
    max_recv_message_size: int
    max_send_message_size: int
    database_url: str
    nats_url: str
    events_stream: str
    otlp_endpoint: str
    trace_file: str
    log_level: str
    log_format: str
    services: Mapping[str, Endpoint]
    plugins: Mapping[str, Mapping[str, Any]]
    proxy_plugins: Mapping[str, ProxyPlugin]
    raw: Mapping[str, Any]

    def endpoint(self, process: str) -> Endpoint:
        try:
            return self.services[process]
        except KeyError:
            raise InvalidArgument(f"no endpoint configured for service {process!r}") from None

    def plugin_config(self, plugin_id: str) -> Mapping[str, Any]:
        return self.plugins.get(plugin_id, {})


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go-style duration (``"100ms"``, ``"1h30m"``) or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    total, position = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise InvalidArgument(f"invalid duration {value!r}: want e.g. 100ms, 5s, 1h30m")
    return total


def grpc_target(address: str) -> str:
    """Turn a configured address into a gRPC target string."""
    if address.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return address
    if address.startswith("tcp://"):
        return address.removeprefix("tcp://")
    if address.startswith("/") or address.startswith("."):
        return f"unix://{os.path.abspath(address)}"
    return address


def socket_path(address: str) -> str | None:
    """The filesystem path of a unix-socket address, or None for TCP."""
    if address.startswith("unix://"):
        return address.removeprefix("unix://")
    if address.startswith("unix:"):
        return address.removeprefix("unix:")
    if address.startswith("/") or address.startswith("."):
        return os.path.abspath(address)
    return None


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the file at ``path`` (if any), then environment, then ``overrides``.

    ``overrides`` maps dotted key paths (``"database.url"``) to values; flags
    land here.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise InvalidArgument(f"config file {os.fspath(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"config file {os.fspath(path)!r}: {e}") from e
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            if keys[0] in _ENV_SECTIONS:
                _set_path(data, keys, _parse_scalar(value))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, dotted.split("."), value)
    return from_mapping(data)


def from_mapping(data: Mapping[str, Any]) -> Config:
    version = data.get("version", 2)
    if version not in (2, 3):
        raise InvalidArgument(f"config version {version!r} is not supported (use 2)")
    root = Path(os.path.abspath(_str(data, "root", DEFAULT_ROOT)))
    state = Path(os.path.abspath(_str(data, "state", DEFAULT_STATE)))
    grpc = _table(data, "grpc")
    database = _table(data, "database")
    events = _table(data, "events")
    tracing = _table(data, "tracing")
    debug = _table(data, "debug")
    services_raw = _table(data, "services")

    services: dict[str, Endpoint] = {}
    for process in topology.PROCESSES:
        section = _table(services_raw, process)
        services[process] = Endpoint(
            address=_str(section, "address", str(state / "services" / f"{process}.sock")),
            tcp_address=_str(section, "tcp_address", ""),
            listen=_str(section, "listen", ""),
            enabled=_bool(section, "enabled", True),
        )

    proxies: dict[str, ProxyPlugin] = {}
    for name, section in _table(data, "proxy_plugins").items():
        if not isinstance(section, Mapping):
            raise InvalidArgument(f"proxy_plugins.{name} must be a table")
        address = _str(section, "address", "")
        if not address:
            raise InvalidArgument(f"proxy_plugins.{name}: address is required")
        proxies[name] = ProxyPlugin(
            name=name,
            type=_str(section, "type", ""),
            address=address,
            platform=_str(section, "platform", ""),
            capabilities=tuple(str(c) for c in section.get("capabilities", ())),
            exports={str(k): str(v) for k, v in dict(section.get("exports", {})).items()},
        )

    return Config(
        root=root,
        state=state,
        node_name=_str(data, "node_name", socket.gethostname()),
        address=_str(grpc, "address", str(state / "berth.sock")),
        tcp_address=_str(grpc, "tcp_address", ""),
        max_recv_message_size=_int(grpc, "max_recv_message_size", DEFAULT_MAX_MESSAGE_SIZE),
        max_send_message_size=_int(grpc, "max_send_message_size", DEFAULT_MAX_MESSAGE_SIZE),
        database_url=_str(database, "url", f"sqlite:///{root / 'berth.db'}"),
        nats_url=_str(events, "nats_url", ""),
        events_stream=_str(events, "stream", "BERTH_EVENTS"),
        otlp_endpoint=_str(tracing, "otlp_endpoint", ""),
        trace_file=_str(tracing, "file", ""),
        log_level=_str(debug, "level", "info"),
        log_format=_str(debug, "format", "json"),
        services=services,
        plugins={str(k): dict(v) for k, v in _table(data, "plugins").items()},
        proxy_plugins=proxies,
        raw=copy.deepcopy(dict(data)),
    )


def dump(config: Config) -> str:
    """The effective configuration as TOML (what the launcher hands its children)."""
    lines = [
        "version = 2",
        f"root = {_quote(str(config.root))}",
        f"state = {_quote(str(config.state))}",
        f"node_name = {_quote(config.node_name)}",
        "",
        "[grpc]",
        f"address = {_quote(config.address)}",
        f"tcp_address = {_quote(config.tcp_address)}",
        f"max_recv_message_size = {config.max_recv_message_size}",
        f"max_send_message_size = {config.max_send_message_size}",
        "",
        "[database]",
        f"url = {_quote(config.database_url)}",
        "",
        "[events]",
        f"nats_url = {_quote(config.nats_url)}",
        f"stream = {_quote(config.events_stream)}",
        "",
        "[tracing]",
        f"otlp_endpoint = {_quote(config.otlp_endpoint)}",
        f"file = {_quote(config.trace_file)}",
        "",
        "[debug]",
        f"level = {_quote(config.log_level)}",
        f"format = {_quote(config.log_format)}",
    ]
    for process, endpoint in config.services.items():
        lines += [
            "",
            f"[services.{process}]",
            f"address = {_quote(endpoint.address)}",
            f"tcp_address = {_quote(endpoint.tcp_address)}",
            f"listen = {_quote(endpoint.listen)}",
            f"enabled = {_toml_value(endpoint.enabled)}",
        ]
    for plugin_id, settings in config.plugins.items():
        lines += ["", f"[plugins.{_quote(plugin_id)}]"]
        lines += [f"{_quote(k)} = {_toml_value(v)}" for k, v in settings.items()]
    for name, proxy in config.proxy_plugins.items():
        lines += [
            "",
            f"[proxy_plugins.{_quote(name)}]",
            f"type = {_quote(proxy.type)}",
            f"address = {_quote(proxy.address)}",
            f"platform = {_quote(proxy.platform)}",
            f"capabilities = {_toml_value(list(proxy.capabilities))}",
            f"exports = {_toml_value(dict(proxy.exports))}",
        ]
    return "\n".join(lines) + "\n"


def _set_path(data: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"config: {key!r} must be a table")
    return value


def _str(data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgument(f"config: {key!r} must be a string, not {value!r}")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"config: {key!r} must be true or false, not {value!r}")
    return value


def _int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"config: {key!r} must be an integer, not {value!r}")
    return value


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{_quote(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise InvalidArgument(f"config: cannot write {value!r} as TOML")
