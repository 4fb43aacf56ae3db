from __future__ import annotations

from pathlib import Path

import pytest

from shared import config
from shared.errors import InvalidArgument


def test_defaults_follow_root_and_state() -> None:
    cfg = config.load(environ={}, overrides={"root": "/r", "state": "/s"})
    assert cfg.root == Path("/r")
    assert cfg.address == "/s/berth.sock"
    assert cfg.database_url == "sqlite:////r/berth.db"
    assert cfg.services["content"].address == "/s/services/content.sock"
    assert cfg.services["content"].enabled
    assert cfg.nats_url == ""


def test_file_environment_and_flags_in_order(tmp_path: Path) -> None:
    path = tmp_path / "berth.toml"
    path.write_text(
        'version = 2\nroot = "/file-root"\n[database]\nurl = "sqlite:////file.db"\n'
        '[services.content]\naddress = "content:7001"\n'
        '[plugins."io.containerd.snapshotter.v1.overlayfs"]\nmount_options = ["x"]\n'
        '[proxy_plugins.mysnap]\ntype = "snapshot"\naddress = "/run/mysnap.sock"\n'
    )
    env = {"BERTH_DATABASE__URL": "sqlite:////env.db", "BERTH_GRPC__MAX_RECV_MESSAGE_SIZE": "1024",
           "BERTH_NAMESPACE": "not-config"}  # fmt: skip
    cfg = config.load(path, environ=env, overrides={"root": "/flag-root", "state": None})
    assert cfg.root == Path("/flag-root")  # flag beats file
    assert cfg.database_url == "sqlite:////env.db"  # environment beats file
    assert cfg.max_recv_message_size == 1024  # parsed as a TOML integer
    assert cfg.services["content"].target == "content:7001"
    assert cfg.plugin_config("io.containerd.snapshotter.v1.overlayfs") == {"mount_options": ["x"]}
    assert cfg.proxy_plugins["mysnap"].address == "/run/mysnap.sock"
    assert "namespace" not in cfg.raw


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = config.load(
        environ={},
        overrides={"root": "/r", "state": "/s", "events.nats_url": "nats://127.0.0.1:1",
                   "services.cri.enabled": False,
                   "plugins": {"p.x": {"a": 1, "b": ["c"], "t": {"k": "v"}}}},
    )  # fmt: skip
    path = tmp_path / "dump.toml"
    path.write_text(config.dump(cfg))
    again = config.load(path, environ={})
    assert again.services == cfg.services
    assert again.nats_url == "nats://127.0.0.1:1"
    assert not again.services["cri"].enabled
    assert again.plugins == cfg.plugins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 1", "version"),
        ("root = 3", "'root' must be a string"),
        ("[grpc]\nmax_recv_message_size = 'big'", "must be an integer"),
        ("[proxy_plugins.x]\ntype = 'snapshot'", "address is required"),
        ("root = ", "config file"),
    ],
)
def test_bad_config_is_invalid_argument(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        config.load(path, environ={})


def test_missing_file() -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        config.load("/nonexistent/berth.toml", environ={})


@pytest.mark.parametrize(
    ("address", "target", "path"),
    [
        ("/run/x.sock", "unix:///run/x.sock", "/run/x.sock"),
        ("unix:///run/x.sock", "unix:///run/x.sock", "/run/x.sock"),
        ("tcp://10.0.0.1:7000", "10.0.0.1:7000", None),
        ("content:7001", "content:7001", None),
    ],
)
def test_addresses(address: str, target: str, path: str | None) -> None:
    assert config.grpc_target(address) == target
    assert config.socket_path(address) == path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0ms", 0.0),
        ("100ms", 0.1),
        ("5s", 5.0),
        ("1h30m", 5400.0),
        (2, 2.0),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "s", "5 s", "5x", "1h-3m"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid duration"):
        config.parse_duration(bad)
