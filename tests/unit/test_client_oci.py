"""berth.oci: containerd's default spec and its options, on root filesystems made here."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from berth import _linux, oci
from shared.errors import InvalidArgument, NotFound

CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

# containerd 1.7's populateDefaultUnixSpec for container "c1" in namespace "ns", as JSON.
CONTAINERD_DEFAULT = {
    "ociVersion": "1.1.0",
    "process": {
        "user": {"uid": 0, "gid": 0},
        "cwd": "/",
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs"},
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "cgroupsPath": "/ns/c1",
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                       {"type": "network"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}  # fmt: skip


class ImageConfig:
    """An image as with_image_config sees one (berth.Image's config(), nothing else)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.name = "example/image:latest"
        self._config = config

    def config(self) -> dict[str, Any]:
        return {"architecture": "amd64", "os": "linux", "config": self._config}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# a comment\n"
        "app:x:1000:1001:App:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc/group").write_text(
        "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\naudio:x:63:app\nnogroup:x:65534:\n"
    )
    return root


def spec_for(*opts: oci.SpecOpt, root: Path | None = None) -> oci.Spec:
    base = (oci.with_root_path(str(root)),) if root is not None else ()
    return oci.generate_spec(oci.SpecContext("c1", "ns"), *base, *opts)


def test_default_spec_is_containerds() -> None:
    assert spec_for() == CONTAINERD_DEFAULT
    # Nothing shared between specs: options on one do not leak into the next.
    first = spec_for(oci.with_added_capabilities(["CAP_SYS_ADMIN"]))
    assert "CAP_SYS_ADMIN" in first["process"]["capabilities"]["effective"]
    assert spec_for() == CONTAINERD_DEFAULT
    json.dumps(first)  # a plain JSON document


@pytest.mark.parametrize(
    ("defaults", "overrides", "merged"),
    [
        (["A=1", "B=2"], ["B=3", "C=4"], ["A=1", "B=3", "C=4"]),
        (["A=1", "B=2"], ["A"], ["B=2"]),
        (["A=1"], ["A=", "X"], ["A="]),
        ([], ["A=1", "A=2"], ["A=2"]),
    ],
)
def test_env_merges_as_containerd(
    defaults: list[str], overrides: list[str], merged: list[str]
) -> None:
    assert oci.merge_env(defaults, overrides) == merged


def test_image_config_gives_env_args_cwd_and_root_groups(rootfs: Path) -> None:
    image = ImageConfig({"Env": ["PATH=/bin", "FOO=bar"], "Entrypoint": ["/entry"],
                         "Cmd": ["serve"], "WorkingDir": "/srv"})  # fmt: skip
    spec = spec_for(oci.with_env({"FOO": "baz", "X": "1"}), oci.with_image_config(image),
                    root=rootfs)  # fmt: skip
    process = spec["process"]
    assert process["env"] == ["PATH=/bin", "FOO=baz", "X=1"]
    assert process["args"] == ["/entry", "serve"]
    assert process["cwd"] == "/srv"
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    replaced = spec_for(oci.with_image_config(image, args=["other"]), root=rootfs)
    assert replaced["process"]["args"] == ["/entry", "other"]


def test_image_without_env_gets_the_default_path() -> None:
    spec = spec_for(oci.with_image_config(ImageConfig({"Cmd": ["sh"]})))
    assert spec["process"]["env"] == [oci.DEFAULT_PATH]
    assert spec["process"]["cwd"] == "/"
    # No root filesystem to read groups from: the primary group only.
    assert spec["process"]["user"]["additionalGids"] == [0]


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("app", {"uid": 1000, "gid": 1001, "additionalGids": [1001, 50, 63]}),
        ("1000", {"uid": 1000, "gid": 1001, "additionalGids": [1001, 50, 63]}),
        ("4242", {"uid": 4242, "gid": 0, "additionalGids": [0]}),
        ("app:staff", {"uid": 1000, "gid": 50, "additionalGids": [50, 63]}),
        ("7:8", {"uid": 7, "gid": 8, "additionalGids": [8]}),
        ("nobody:1", {"uid": 65534, "gid": 1, "additionalGids": [1]}),
    ],
)
def test_image_user_is_looked_up_in_the_root(
    rootfs: Path, user: str, expected: dict[str, Any]
) -> None:
    spec = spec_for(oci.with_image_config(ImageConfig({"User": user})), root=rootfs)
    assert spec["process"]["user"] == expected


def test_with_user_resets_groups_to_the_users_own(rootfs: Path) -> None:
    spec = spec_for(oci.with_image_config(ImageConfig({})), oci.with_user("nobody"), root=rootfs)
    assert spec["process"]["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [65534]}


def test_user_errors(rootfs: Path) -> None:
    with pytest.raises(NotFound, match="ghost"):
        spec_for(oci.with_user("ghost"), root=rootfs)
    with pytest.raises(NotFound, match="group 'ghosts'"):
        spec_for(oci.with_user("app:ghosts"), root=rootfs)
    with pytest.raises(InvalidArgument):
        oci.with_user("a:b:c")
    with pytest.raises(InvalidArgument, match="snapshot"):
        spec_for(oci.with_user("app"))  # nothing to look the name up in
    assert spec_for(oci.with_user("5:6"))["process"]["user"]["uid"] == 5  # nothing to look up
    (rootfs / "etc/passwd").unlink()
    with pytest.raises(NotFound, match="no /etc/passwd"):
        spec_for(oci.with_user("app"), root=rootfs)
    assert spec_for(oci.with_user("33"), root=rootfs)["process"]["user"]["gid"] == 0


def test_passwd_links_stay_inside_the_root(rootfs: Path) -> None:
    # An image's /etc/passwd pointing out of it resolves inside it: what is outside is never
    # read.
    outside = rootfs.parent / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("intruder:x:0:0::/:/bin/sh\n")
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("../../outside/passwd")
    with pytest.raises(NotFound, match="no /etc/passwd"):
        spec_for(oci.with_user("intruder"), root=rootfs)
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("../etc/passwd")  # itself
    with pytest.raises(InvalidArgument, match="symbolic links"):
        spec_for(oci.with_user("app"), root=rootfs)
    # A link that stays inside is followed.
    (rootfs / "data").mkdir()
    (rootfs / "data/passwd").write_text("svc:x:5:6::/:/bin/sh\n")
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to("/data/passwd")
    assert spec_for(oci.with_user("svc"), root=rootfs)["process"]["user"]["uid"] == 5


def test_tty_and_host_network() -> None:
    spec = spec_for(oci.with_tty, oci.with_host_network, oci.with_hostname("box"))
    assert spec["process"]["terminal"] is True
    assert spec["process"]["env"][0] == "TERM=xterm"
    assert spec["process"]["env"][1].startswith("HOSTNAME=")
    assert {"type": "network"} not in spec["linux"]["namespaces"]
    assert spec["mounts"][-2:] == [
        {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts",
         "options": ["rbind", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
         "options": ["rbind", "ro"]},
    ]  # fmt: skip
    assert spec["hostname"] == "box"


def test_privileged() -> None:
    spec = spec_for(oci.with_privileged)
    caps = _linux.current_capabilities()
    assert spec["process"]["capabilities"] == {"bounding": caps, "effective": caps,
                                               "permitted": caps}  # fmt: skip
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    sysfs = next(m for m in spec["mounts"] if m["type"] == "sysfs")
    assert sysfs["options"] == ["nosuid", "noexec", "nodev", "rw"]


def test_capabilities_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000000021\n")  # bits 0 and 5
    assert _linux.current_capabilities(status) == ["CAP_CHOWN", "CAP_KILL"]
    spec = spec_for(oci.with_capabilities(["CAP_KILL"]),
                    oci.with_added_capabilities(["CAP_CHOWN", "CAP_KILL"]),
                    oci.with_dropped_capabilities(["CAP_KILL"]))  # fmt: skip
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]


def test_host_devices(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "pts").mkdir(parents=True)
    (dev / "sub").mkdir()
    os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(dev / "null", 0o666)  # past the umask
    os.mknod(dev / "sub/loop9", stat.S_IFBLK | 0o600, os.makedev(7, 9))
    os.mknod(dev / "pts/0", stat.S_IFCHR | 0o600, os.makedev(136, 0))  # skipped: pts
    os.mknod(dev / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))  # skipped: console
    (dev / "fd").symlink_to("/proc/self/fd")
    (dev / "plain").write_text("")
    assert _linux.host_devices(str(dev)) == [
        {"path": str(dev / "null"), "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
         "uid": 0, "gid": 0},
        {"path": str(dev / "sub/loop9"), "type": "b", "major": 7, "minor": 9, "fileMode": 0o600,
         "uid": 0, "gid": 0},
    ]  # fmt: skip


def test_resources_and_limits() -> None:
    spec = spec_for(oci.with_memory_limit(64 << 20), oci.with_cpus(1.5), oci.with_cpu_shares(512),
                    oci.with_pids_limit(100), oci.with_rlimit("RLIMIT_NOFILE", 10, 20),
                    oci.with_all_devices_allowed)  # fmt: skip
    assert spec["linux"]["resources"] == {
        "devices": [{"allow": True, "access": "rwm"}],
        "memory": {"limit": 64 << 20},
        "cpu": {"quota": 150000, "period": 100000, "shares": 512},
        "pids": {"limit": 100},
    }
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20, "soft": 10}]
    devices = spec_for(oci.with_default_unix_devices)["linux"]["resources"]["devices"]
    assert len(devices) == 10 and devices[-2] == {"allow": True, "type": "c", "major": 136,
                                                  "access": "rwm"}  # fmt: skip


def test_mounts_and_namespaces() -> None:
    spec = spec_for(
        oci.with_mounts([oci.bind_mount("/data", "/mnt/data")]),
        oci.without_mounts("/run", "/dev/mqueue/"),
        oci.with_dev_shm_size(1024),
        oci.with_linux_namespace("network", "/proc/1/ns/net"),
        oci.with_host_namespace("ipc"),
        oci.with_rootfs_readonly,
        oci.with_masked_paths(None),
        oci.with_annotations({"a": "b"}),
    )
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/mnt/data"]
    assert spec["mounts"][-1]["options"] == ["rbind", "rw"]
    assert spec["mounts"][3]["options"][-1] == "size=1024k"
    assert spec["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "uts"}, {"type": "mount"},
        {"type": "network", "path": "/proc/1/ns/net"},
    ]  # fmt: skip
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert "maskedPaths" not in spec["linux"]
    assert spec["annotations"] == {"a": "b"}
    with pytest.raises(InvalidArgument):
        oci.with_host_namespace("nothing")
    with pytest.raises(NotFound):
        spec_for(oci.without_mounts("/dev/shm"), oci.with_dev_shm_size(1))


def test_whole_specs(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"ociVersion": "1.0.0", "process": {"args": ["x"]}}))
    assert spec_for(oci.with_spec_from_file(path)) == {"ociVersion": "1.0.0",
                                                       "process": {"args": ["x"]}}  # fmt: skip
    assert spec_for(oci.with_spec_from_file(path), oci.with_default_spec()) == CONTAINERD_DEFAULT
    path.write_text("{not json")
    with pytest.raises(InvalidArgument):
        spec_for(oci.with_spec_from_file(path))
    assert spec_for(oci.with_default_path_env)["process"]["env"] == [oci.DEFAULT_PATH]


def test_a_cri_mount_is_a_bind_with_its_propagation(tmp_path: Path) -> None:
    from services.cri.pods import _bind
    from shared.api.cri.runtime.v1 import api_pb2 as cri

    mount = cri.Mount(container_path="/data", host_path=str(tmp_path), readonly=True,
                      propagation=cri.PROPAGATION_HOST_TO_CONTAINER)  # fmt: skip
    assert _bind(mount) == {
        "destination": "/data",
        "type": "bind",
        "source": str(tmp_path),
        "options": ["rbind", "ro", "rslave"],
    }
