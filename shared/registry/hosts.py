"""Which endpoints serve a registry host, read as containerd 1.7 reads ``certs.d``.

For a reference's host ``H`` and a root directory ``R`` (``--hosts-dir``,
CRI ``config_path``), the first existing one of ``R/<H with :port as _port_>``,
``R/H`` and ``R/_default`` is the host directory. Its ``hosts.toml``::

    server = "https://registry-1.docker.io"   # tried last; default: H itself
    capabilities = ["pull", "resolve"]        # top-level keys configure `server`
    ca = "ca.crt"                             # or a list; relative to this directory
    client = [["client.cert", "client.key"]]  # or "both.pem" or ["a.pem", "b.pem"]
    skip_verify = false
    override_path = false                     # true: the URL path is the API root, no /v2
    [header]
      x-custom = ["a", "b"]

    [host."https://mirror.example"]           # tried first, in file order
      capabilities = ["pull", "resolve"]
      [host."https://mirror.example".header]
        authorization = "..."

Without ``hosts.toml`` the directory's Docker-style ``*.crt`` (CA) and
``*.cert``/``*.key`` (client pair) files configure the default endpoint. Without
any directory, the endpoint is ``https://H/v2`` (``docker.io`` means
``registry-1.docker.io``), plain http with ``plain_http`` (ctr ``--plain-http``).

Loopback hosts (``localhost``, ``127.x``, ``::1``) are special, as in
containerd 1.7.24: no port or 443 means https without verification; 80 means
http; any other port means "try https (unverified), and if the server answers
in plain HTTP, use http from then on" (:attr:`RegistryHost.http_fallback`).
The same fallback applies to any ``http://`` endpoint on a port other than 80
that has TLS settings (``ca``, ``client`` or ``skip_verify``).

Unlike containerd, which logs a broken ``hosts.toml`` and carries on with the
certificate files, this module raises InvalidArgument naming the file and the
problem, unknown keys included: a mirror that is silently ignored is the most
common registry-configuration complaint.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import posixpath
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import InvalidArgument

HOSTS_FILE = "hosts.toml"
DEFAULT_DIR = "_default"
DOCKER_HOST = "docker.io"
DOCKER_ENDPOINT = "registry-1.docker.io"


class Capability(enum.Flag):
    """What an endpoint may be used for. Give RESOLVE (tag -> digest) only to trusted hosts."""

    PULL = enum.auto()
    RESOLVE = enum.auto()
    PUSH = enum.auto()


ALL_CAPABILITIES = Capability.PULL | Capability.RESOLVE | Capability.PUSH


@dataclass(frozen=True)
class RegistryHost:
    """One endpoint for a registry host, in the order it is tried."""

    scheme: str  # "https" or "http"
    host: str  # "mirror.example:5000"
    path: str = "/v2"  # the API root
    capabilities: Capability = ALL_CAPABILITIES
    ca_files: tuple[Path, ...] = ()  # added to the system roots
    client_certs: tuple[tuple[Path, Path | None], ...] = ()  # (cert, key); None: key in cert
    skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # sent on every request, repeated names kept
    http_fallback: bool = False  # scheme is https, but a plain-HTTP server means use http

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities


@dataclass
class _Config:
    """One parsed entry, before defaults: containerd's hostConfig."""

    scheme: str = ""
    host: str = ""
    path: str = ""
    capabilities: Capability = ALL_CAPABILITIES
    ca_files: list[Path] | None = None
    client_certs: list[tuple[Path, Path | None]] | None = None
    skip_verify: bool | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def is_localhost(host: str) -> bool:
    """containerd's docker.IsLocalhost: ``localhost`` or a loopback IP, any port."""
    name, _ = split_host_port(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host_port(host: str) -> tuple[str, str]:
    """``("127.0.0.1", "5000")``, ``("::1", "")`` for ``[::1]`` or ``::1``, like Go's
    net.SplitHostPort but tolerant of a missing port."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, ""


def host_directory_names(host: str) -> list[str]:
    """The directory names tried for ``host``, in order (containerd's hostPaths)."""
    names = []
    idx = host.rfind(":")
    if idx > 0:
        names.append(f"{host[:idx]}_{host[idx + 1 :]}_")
    return [*names, host, DEFAULT_DIR]


def host_dir(root: Path, host: str) -> Path | None:
    """The host directory for ``host`` under ``root``, or None when none exists."""
    for name in host_directory_names(host):
        candidate = root / name
        if os.path.lexists(candidate):
            return candidate
    return None


def registry_hosts(
    host: str, hosts_dir: Path | None = None, *, plain_http: bool = False
) -> list[RegistryHost]:
    """The endpoints for a reference's ``host``, mirrors first (containerd's ConfigureHosts)."""
    directory = host_dir(hosts_dir, host) if hosts_dir is not None else None
    configs = _load_host_dir(directory) if directory is not None else [_Config()]
    last = configs[-1]
    if not last.host:
        _default_endpoint(last, host, plain_http)
    return [_finish(c) for c in configs]


def _default_endpoint(config: _Config, host: str, plain_http: bool) -> None:
    if host == DOCKER_HOST:
        config.scheme, config.host = "https", DOCKER_ENDPOINT
    elif is_localhost(host):
        config.host = host
        if plain_http:
            config.scheme = "http"
        else:
            _, port = split_host_port(host)
            config.scheme = "https" if port in ("", "443") else "http"
            if port != "80":
                config.skip_verify = True
    else:
        config.host = host
        config.scheme = "http" if plain_http else "https"
    config.path = "/v2"
    config.capabilities = ALL_CAPABILITIES


def _finish(config: _Config) -> RegistryHost:
    explicit_tls = (
        config.ca_files is not None
        or config.client_certs is not None
        or config.skip_verify is not None
    )
    scheme, fallback = config.scheme, False
    if scheme == "http" and explicit_tls and split_host_port(config.host)[1] not in ("", "80"):
        scheme, fallback = "https", True
    return RegistryHost(
        scheme=scheme,
        host=config.host,
        path=config.path,
        capabilities=config.capabilities,
        ca_files=tuple(config.ca_files or ()),
        client_certs=tuple(config.client_certs or ()),
        skip_verify=bool(config.skip_verify),
        headers=tuple(config.headers),
        http_fallback=fallback,
    )


def _load_host_dir(directory: Path) -> list[_Config]:
    if not directory.is_dir():
        raise InvalidArgument(f"{directory}: host configuration must be a directory")
    path = directory / HOSTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path}: cannot read: {e}") from e
    if not text:
        return [_cert_files(directory)]
    return _parse_hosts_toml(text, directory, source=str(path))


def _cert_files(directory: Path) -> _Config:
    """Docker's certs.d layout: ``*.crt`` CAs, ``*.cert`` client certs with their ``*.key``."""
    config = _Config()
    try:
        names = sorted(p.name for p in directory.iterdir() if not p.is_dir())
    except OSError as e:
        raise InvalidArgument(f"{directory}: cannot list: {e}") from e
    for name in names:
        if name.endswith(".crt"):
            config.ca_files = [*(config.ca_files or []), directory / name]
        if name.endswith(".cert"):
            key = directory / (name[: -len(".cert")] + ".key")
            pair = (directory / name, key if key.exists() else None)
            config.client_certs = [*(config.client_certs or []), pair]
    return config


_ENTRY_KEYS = {"capabilities", "ca", "client", "skip_verify", "header", "override_path"}


def _parse_hosts_toml(text: str, base_dir: Path, *, source: str = HOSTS_FILE) -> list[_Config]:
    """The ``[host.*]`` entries in file order, then the ``server`` entry (host "" if unset)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"{source}: invalid TOML: {e}") from e
    unknown = set(doc) - _ENTRY_KEYS - {"server", "host"}
    if unknown:
        raise InvalidArgument(f"{source}: unknown keys {sorted(unknown)}")
    hosts = doc.get("host", {})
    if not isinstance(hosts, dict):
        raise InvalidArgument(f'{source}: "host" must be a table of [host."<url>"] tables')
    configs = []
    for server, table in hosts.items():  # tomllib keeps file order
        where = f'{source}: [host."{server}"]'
        if not isinstance(table, dict):
            raise InvalidArgument(f"{where} must be a table")
        if extra := set(table) - _ENTRY_KEYS:
            raise InvalidArgument(f"{where}: unknown keys {sorted(extra)} (mirrors cannot nest)")
        configs.append(_parse_entry(server, base_dir, table, where))
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise InvalidArgument(f'{source}: "server" must be a string')
    root = {k: v for k, v in doc.items() if k in _ENTRY_KEYS}
    configs.append(_parse_entry(server, base_dir, root, source))
    return configs


def _parse_entry(server: str, base_dir: Path, table: Mapping[str, Any], where: str) -> _Config:
    config = _Config()
    override_path = _typed(table, "override_path", bool, where, False)
    if server:
        _parse_server(config, server, override_path, where)
    config.skip_verify = _typed(table, "skip_verify", bool, where, None)
    if "capabilities" in table:
        names = _string_list(table["capabilities"], f"{where}: capabilities", allow_str=False)
        config.capabilities = Capability(0)
        for name in names:
            try:
                config.capabilities |= Capability[name.upper()]
            except KeyError:
                raise InvalidArgument(
                    f"{where}: unknown capability {name!r} (want pull, resolve, push)"
                ) from None
    if "ca" in table:
        config.ca_files = [_abs(p, base_dir) for p in _string_list(table["ca"], f"{where}: ca")]
    if "client" in table:
        config.client_certs = _client_pairs(table["client"], base_dir, f"{where}: client")
    header = _typed(table, "header", dict, where, {})
    for key, value in header.items():
        config.headers += [(key, v) for v in _string_list(value, f"{where}: header {key!r}")]
    return config


def _parse_server(config: _Config, server: str, override_path: bool, where: str) -> None:
    url = server if server.startswith("http") else "https://" + server
    parts = urllib.parse.urlsplit(url)
    try:
        valid = parts.port is not None or not parts.netloc.endswith(":")
    except ValueError:
        valid = False
    if not valid or parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise InvalidArgument(f"{where}: invalid server {server!r}: want [http[s]://]host[/path]")
    path = posixpath.normpath(parts.path) if parts.path else ""
    path = "" if path in ("/", ".") else path
    if not override_path and not path.endswith("/v2"):
        path += "/v2"
    config.scheme, config.host, config.path = parts.scheme, parts.netloc, path


def _typed(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind):
        raise InvalidArgument(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    return value


def _string_list(value: Any, where: str, *, allow_str: bool = True) -> list[str]:
    if allow_str and isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    want = "a string or a list of strings" if allow_str else "a list of strings"
    raise InvalidArgument(f"{where} must be {want}, not {value!r}")


def _client_pairs(value: Any, base_dir: Path, where: str) -> list[tuple[Path, Path | None]]:
    if isinstance(value, str):
        return [(_abs(value, base_dir), None)]
    if not isinstance(value, list):
        raise InvalidArgument(f"{where} must be a string or a list, not {value!r}")
    pairs: list[tuple[Path, Path | None]] = []
    for item in value:
        if isinstance(item, str):
            pairs.append((_abs(item, base_dir), None))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(s, str) for s in item):
            pairs.append((_abs(item[0], base_dir), _abs(item[1], base_dir)))
        else:
            raise InvalidArgument(f"{where}: want a file or a [cert, key] pair, not {item!r}")
    return pairs


def _abs(path: str, base_dir: Path) -> Path:
    return Path(path) if os.path.isabs(path) else base_dir / path
