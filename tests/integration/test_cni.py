"""CNI through Debian's real plugins (bridge + host-local) into namespaces made by
``ip netns``: set up, the cache libcni would read, tear down, roll-back of a chain that
fails part-way, and the plugins' own errors passed on."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import cni
from shared.errors import InvalidArgument, NotFound
from tests.integration.cni_support import (
    PLUGIN_DIR,
    BridgeNetwork,
    addresses_in,
    bridge_network,
    have_cni,
    link_exists,
    network_namespace,
)

pytestmark = pytest.mark.skipif(not have_cni(), reason="needs root and Debian's CNI plugins")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[BridgeNetwork]:
    with bridge_network(tmp_path / "cni") as n:
        yield n


@pytest.fixture
def netns() -> Iterator[str]:
    with network_namespace() as name:
        yield name


def network(net: BridgeNetwork) -> cni.Network:
    return cni.Network.from_conf_dir(str(net.conf_dir), [PLUGIN_DIR], str(net.cache_dir))


def test_setup_attaches_and_remove_detaches(net: BridgeNetwork, netns: str) -> None:
    n = network(net)
    attached = n.setup("c1", f"/run/netns/{netns}")
    [address] = attached.addresses()
    assert address.startswith(f"{net.subnet_prefix}.") and address.endswith("/24")
    assert addresses_in(netns) == [address]
    assert link_exists(net.bridge)
    assert net.allocated() == [address.split("/")[0]]

    # The cache is libcni's, so containerd's tools could tear this down too.
    cached = json.loads((net.cache_dir / "results" / f"{net.name}-c1-eth0").read_text())
    assert cached["kind"] == "cniCacheV1" and cached["containerId"] == "c1"
    assert cached["result"]["ips"][0]["address"] == address
    assert n.attachment("c1") == attached

    n.remove("c1", f"/run/netns/{netns}")
    assert not link_exists("eth0", netns)
    assert net.allocated() == []
    assert not (net.cache_dir / "results" / f"{net.name}-c1-eth0").exists()
    assert n.attachment("c1") is None
    n.remove("c1", f"/run/netns/{netns}")  # twice is fine, as with libcni


def test_two_containers_get_two_addresses(net: BridgeNetwork) -> None:
    n = network(net)
    with network_namespace() as a, network_namespace() as b:
        first = n.setup("a", f"/run/netns/{a}").addresses()
        second = n.setup("b", f"/run/netns/{b}").addresses()
        assert first != second
        assert len(net.allocated()) == 2
        # Found through the cache alone, with no configuration directory.
        assert cni.detach_everywhere("a", [PLUGIN_DIR], str(net.cache_dir)) == [net.name]
        assert cni.detach_everywhere("b", [PLUGIN_DIR], str(net.cache_dir), netns="") == [net.name]
    assert net.allocated() == []


def test_a_chain_failing_part_way_is_rolled_back(net: BridgeNetwork, netns: str) -> None:
    net.write(net.conflist({"type": "no-such-plugin"}))
    with pytest.raises(NotFound, match="no-such-plugin"):
        network(net).setup("c2", f"/run/netns/{netns}")
    assert not link_exists("eth0", netns)
    assert net.allocated() == []
    assert not (net.cache_dir / "results").exists() or not any(
        (net.cache_dir / "results").iterdir()
    )


def test_a_plugins_own_error_is_passed_on(net: BridgeNetwork, netns: str) -> None:
    doc = net.conflist()
    doc["plugins"][0]["ipam"]["subnet"] = "not-a-subnet"  # type: ignore[index]
    net.write(doc)
    with pytest.raises(cni.CniError, match="not-a-subnet") as err:
        network(net).setup("c3", f"/run/netns/{netns}")
    assert "bridge ADD" in str(err.value)
    assert not link_exists("eth0", netns)


def test_a_missing_namespace_is_the_plugins_error(net: BridgeNetwork) -> None:
    with pytest.raises(cni.CniError, match="bridge ADD"):
        network(net).setup("c4", "/run/netns/berth-test-does-not-exist")
    assert net.allocated() == []


def test_configuration_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no CNI network configuration"):
        cni.load_default_network(str(tmp_path / "absent"))
    (tmp_path / "00-bad.conf").write_text("{not json")
    with pytest.raises(InvalidArgument, match=r"00-bad\.conf: not JSON"):
        cni.load_default_network(str(tmp_path))
    os.unlink(tmp_path / "00-bad.conf")
    (tmp_path / "10-escape.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../bin/sh"}]})
    )
    with pytest.raises(InvalidArgument, match="is not a name"):
        cni.load_default_network(str(tmp_path))
    with pytest.raises(InvalidArgument, match="container id"):
        cni.Network(cni.NetworkConfig.parse(b'{"name": "n", "type": "bridge"}')).setup(
            "../x", "/run/netns/x"
        )


def test_a_single_plugin_conf_is_a_chain_of_one(tmp_path: Path) -> None:
    (tmp_path / "20-one.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "one", "type": "loopback"})
    )
    (tmp_path / "30-later.conflist").write_text("{ignored, as only the first file counts")
    config = cni.load_default_network(str(tmp_path))
    assert config.name == "one"
    assert config.plugins == ({"type": "loopback"},)
    assert json.loads(config.plugin_conf(config.plugins[0])) == {
        "type": "loopback",
        "name": "one",
        "cniVersion": "0.4.0",
    }


def test_capability_arguments_go_to_the_plugins_that_declare_them() -> None:
    config = cni.NetworkConfig.parse(json.dumps({
        "cniVersion": "1.0.0", "name": "n",
        "plugins": [{"type": "bridge"},
                    {"type": "portmap", "capabilities": {"portMappings": True}}],
    }).encode())  # fmt: skip
    mappings = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    bridge, portmap = (json.loads(config.plugin_conf(p, None, mappings)) for p in config.plugins)
    assert "runtimeConfig" not in bridge
    assert portmap["runtimeConfig"] == mappings
    assert "runtimeConfig" not in json.loads(config.plugin_conf(config.plugins[1], None, {}))
