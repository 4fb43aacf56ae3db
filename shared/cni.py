"""Container networking through CNI plugins, as containerd's go-cni and libcni do it.

A network is the first configuration file (``.conf``, ``.conflist`` or ``.json``, by
name) in a configuration directory. Setting a container up runs the network's
plugins in order with ``ADD`` (each one handed its predecessor's result), caches the
final result where libcni keeps it (``<cache>/results/<network>-<id>-<ifname>``, so
containerd's tools can tear down what berth set up and the other way round), and
removing runs them in reverse with ``DEL``. Nothing here knows about gRPC: the
``berth run --cni`` command and the CRI service both use it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound

DEFAULT_CONF_DIR = "/etc/cni/net.d"
# go-cni looks in /opt/cni/bin; Debian's containernetworking-plugins live in /usr/lib/cni.
DEFAULT_PLUGIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_IFNAME = "eth0"
CONF_SUFFIXES = (".conf", ".conflist", ".json")
PLUGIN_TIMEOUT = 60.0
_CACHE_KIND = "cniCacheV1"


class CniError(FailedPrecondition):
    """A plugin refused or failed; the message carries the plugin's own words."""


@dataclass(frozen=True)
class NetworkConfig:
    """One network: a name, a CNI version and its plugin chain."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str = ""
    raw: bytes = b""

    @classmethod
    def parse(cls, data: bytes, source: str = "") -> NetworkConfig:
        where = source or "CNI configuration"
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"{where}: not JSON: {e}") from e
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{where}: want a JSON object")
        if "plugins" in doc:
            plugins = doc["plugins"]
            if not isinstance(plugins, list) or not plugins:
                raise InvalidArgument(f"{where}: 'plugins' must be a non-empty list")
        elif "type" in doc:  # a single-plugin .conf
            plugins = [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]
            data = json.dumps({"cniVersion": doc.get("cniVersion", ""), "name": doc.get("name"),
                               "plugins": plugins}).encode()  # fmt: skip
        else:
            raise InvalidArgument(f"{where}: neither a plugin 'type' nor a 'plugins' list")
        name, version = doc.get("name"), doc.get("cniVersion", "")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{where}: the network has no 'name'")
        if not isinstance(version, str):
            raise InvalidArgument(f"{where}: 'cniVersion' must be a string")
        for plugin in plugins:
            if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
                raise InvalidArgument(f"{where}: every plugin needs a 'type'")
            if "/" in plugin["type"] or plugin["type"] in ("", ".", ".."):
                raise InvalidArgument(f"{where}: plugin type {plugin['type']!r} is not a name")
        return cls(name, version, tuple(plugins), source, data)

    def plugin_conf(
        self,
        plugin: Mapping[str, Any],
        prev_result: Any = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> bytes:
        """What a plugin reads on stdin: its conf with the network's name and version,
        its predecessor's result, and ``runtimeConfig`` with the capability arguments
        (``portMappings`` ...) it declares it takes, as libcni injects them."""
        conf = {**plugin, "name": self.name, "cniVersion": self.cni_version}
        if prev_result is not None:
            conf["prevResult"] = prev_result
        declared = plugin.get("capabilities")
        if capability_args and isinstance(declared, Mapping):
            runtime = {k: v for k, v in capability_args.items() if declared.get(k)}
            if runtime:
                conf["runtimeConfig"] = {**(plugin.get("runtimeConfig") or {}), **runtime}
        return json.dumps(conf).encode()


def load_default_network(conf_dir: str = DEFAULT_CONF_DIR) -> NetworkConfig:
    """The first configuration in ``conf_dir`` by file name, as go-cni's WithDefaultConf."""
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(conf_dir)
            if entry.name.endswith(CONF_SUFFIXES) and entry.is_file()
        )
    except FileNotFoundError:
        names = []
    if not names:
        raise NotFound(f"no CNI network configuration in {conf_dir}")
    path = os.path.join(conf_dir, names[0])
    return NetworkConfig.parse(Path(path).read_bytes(), path)


@dataclass(frozen=True)
class Attachment:
    """What ``ADD`` gave one container: the plugins' final result, as they wrote it."""

    network: str
    container_id: str
    ifname: str
    result: dict[str, Any] = field(default_factory=dict)

    def addresses(self) -> list[str]:
        """The interface addresses in CIDR form (``10.88.0.2/16``)."""
        return [ip["address"] for ip in self.result.get("ips", []) if "address" in ip]


class Network:
    """Runs one network's plugin chain for containers (go-cni's CNI, one network)."""

    def __init__(
        self,
        config: NetworkConfig,
        plugin_dirs: Sequence[str] = DEFAULT_PLUGIN_DIRS,
        cache_dir: str = DEFAULT_CACHE_DIR,
    ) -> None:
        self.config = config
        self.plugin_dirs = tuple(plugin_dirs)
        self.cache_dir = cache_dir

    @classmethod
    def from_conf_dir(
        cls,
        conf_dir: str = DEFAULT_CONF_DIR,
        plugin_dirs: Sequence[str] = DEFAULT_PLUGIN_DIRS,
        cache_dir: str = DEFAULT_CACHE_DIR,
    ) -> Network:
        return cls(load_default_network(conf_dir), plugin_dirs, cache_dir)

    @property
    def name(self) -> str:
        return self.config.name

    def setup(
        self,
        container_id: str,
        netns: str,
        ifname: str = DEFAULT_IFNAME,
        capability_args: Mapping[str, Any] | None = None,
    ) -> Attachment:
        """Attach the network namespace at ``netns``; on failure nothing stays attached.
        ``capability_args`` go to the plugins that declare them (``{"portMappings":
        [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}``)."""
        _check_id(container_id)
        if not netns:
            raise InvalidArgument("CNI setup needs a network namespace path")
        args = dict(capability_args or {})
        result: Any = None
        done = 0
        try:
            for plugin in self.config.plugins:
                result = self._exec("ADD", plugin, container_id, netns, ifname, result, args=args)
                done += 1
        except BaseException:
            # Undo the plugins that ran (and the one that failed part-way), as a
            # runtime tears down a sandbox whose setup failed; the first error is the news.
            with contextlib.suppress(BerthError):
                self._delete(
                    self.config.plugins[: done + 1], container_id, netns, ifname, result, args=args
                )
            raise
        attachment = Attachment(self.name, container_id, ifname, result or {})
        self._write_cache(attachment, netns, args)
        return attachment

    def remove(self, container_id: str, netns: str = "", ifname: str = DEFAULT_IFNAME) -> None:
        """Detach: ``DEL`` through the chain in reverse; ``netns`` may be gone already."""
        _check_id(container_id)
        cached = self._read_cache(container_id, ifname)
        config = self.config
        prev: Any = None
        args: dict[str, Any] = {}
        if cached is not None:
            prev = cached.get("result")
            if isinstance(cached.get("capabilityArgs"), dict):
                args = cached["capabilityArgs"]
            raw = cached.get("config")
            if isinstance(raw, str):  # tear down with what was set up, as libcni does
                try:
                    config = NetworkConfig.parse(base64.b64decode(raw), "cached CNI config")
                except (InvalidArgument, ValueError):
                    config = self.config
        self._delete(config.plugins, container_id, netns, ifname, prev, config, args=args)
        self._cache_path(container_id, ifname).unlink(missing_ok=True)

    def attachment(self, container_id: str, ifname: str = DEFAULT_IFNAME) -> Attachment | None:
        """What the cache says ``container_id`` got, if it was set up."""
        cached = self._read_cache(container_id, ifname)
        if cached is None:
            return None
        return Attachment(self.name, container_id, ifname, cached.get("result") or {})

    # -- plugins ---------------------------------------------------------------

    def _delete(
        self,
        plugins: Sequence[Mapping[str, Any]],
        container_id: str,
        netns: str,
        ifname: str,
        prev: Any,
        config: NetworkConfig | None = None,
        *,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        config = config or self.config
        if not _at_least(config.cni_version, (0, 4, 0)):
            prev = None  # DEL took no prevResult before CNI 0.4.0
        errors: list[str] = []
        for plugin in reversed(plugins):
            try:
                self._exec("DEL", plugin, container_id, netns, ifname, prev, config, args=args)
            except (CniError, NotFound) as e:  # every plugin gets its chance to clean up
                errors.append(str(e))
        if errors:
            raise CniError("; ".join(errors))

    def find_plugin(self, kind: str) -> str:
        for directory in self.plugin_dirs:
            path = os.path.join(directory, kind)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise NotFound(f"CNI plugin {kind!r}: not in {':'.join(self.plugin_dirs)}")

    def _exec(
        self,
        command: str,
        plugin: Mapping[str, Any],
        container_id: str,
        netns: str,
        ifname: str,
        prev: Any,
        config: NetworkConfig | None = None,
        *,
        args: Mapping[str, Any] | None = None,
    ) -> Any:
        config = config or self.config
        kind = plugin["type"]
        binary = self.find_plugin(kind)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": ":".join(self.plugin_dirs),
        }
        try:
            proc = subprocess.run(
                [binary],
                input=config.plugin_conf(plugin, prev, args),
                env=env,
                capture_output=True,
                timeout=PLUGIN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise CniError(
                f"CNI plugin {kind} {command}: no answer in {PLUGIN_TIMEOUT:.0f} s"
            ) from e
        if proc.returncode != 0:
            raise CniError(f"CNI plugin {kind} {command}: {_plugin_error(proc)}")
        if command != "ADD":
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError as e:
            raise CniError(f"CNI plugin {kind} ADD: result is not JSON: {e}") from e

    # -- libcni's result cache -------------------------------------------------

    def _cache_path(self, container_id: str, ifname: str) -> Path:
        return Path(self.cache_dir, "results", f"{self.name}-{container_id}-{ifname}")

    def _write_cache(
        self, attachment: Attachment, netns: str, capability_args: Mapping[str, Any]
    ) -> None:
        path = self._cache_path(attachment.container_id, attachment.ifname)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "kind": _CACHE_KIND,
            "containerId": attachment.container_id,
            "config": base64.b64encode(self.config.raw).decode(),
            "ifName": attachment.ifname,
            "networkName": self.name,
            "netns": netns,
            "result": attachment.result,
        }
        if capability_args:
            doc["capabilityArgs"] = dict(capability_args)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)

    def _read_cache(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(self._cache_path(container_id, ifname).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("kind") == _CACHE_KIND else None


def _at_least(version: str, wanted: tuple[int, int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return False
    return parts >= wanted


def _check_id(container_id: str) -> None:
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise InvalidArgument(f"CNI container id {container_id!r} is not usable")


def _plugin_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The plugin's error JSON (``code``, ``msg``, ``details``) as one line."""
    try:
        doc = json.loads(proc.stdout)
        message = str(doc.get("msg") or "")
        if doc.get("details"):
            message = f"{message}: {doc['details']}"
        if message:
            return f"{message} (code {doc.get('code')})"
    except (ValueError, AttributeError):
        pass
    text = (proc.stderr or proc.stdout).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


def detach_everywhere(
    container_id: str,
    plugin_dirs: Sequence[str] = DEFAULT_PLUGIN_DIRS,
    cache_dir: str = DEFAULT_CACHE_DIR,
    netns: str = "",
) -> list[str]:
    """Tear down every network the cache says ``container_id`` is attached to.

    Needs no configuration directory: the cache holds the configuration that was set
    up. Returns the names of the networks detached.
    """
    _check_id(container_id)
    detached = []
    results = Path(cache_dir, "results")
    try:
        entries = sorted(results.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if f"-{container_id}-" not in path.name:
            continue
        try:
            doc = json.loads(path.read_bytes())
            config = NetworkConfig.parse(base64.b64decode(doc["config"]), str(path))
        except (ValueError, KeyError, TypeError, InvalidArgument):
            continue
        if doc.get("kind") != _CACHE_KIND or doc.get("containerId") != container_id:
            continue
        Network(config, plugin_dirs, cache_dir).remove(
            container_id, netns, str(doc.get("ifName") or DEFAULT_IFNAME)
        )
        detached.append(config.name)
    return detached
