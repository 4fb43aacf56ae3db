"""Image import and export through the Transfer service (containerd 1.7 wire), checked with
Debian's real ctr: archives berth writes, ctr reads, and the other way round."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from services.images.archive_export import familiar_name
from services.images.archive_names import (
    ImageReference,
    ImportOptions,
    names_for,
    reference_object,
)
from shared import context, typeurl
from shared.api.containerd.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from shared.api.containerd.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from shared.api.containerd.types.transfer import imagestore_pb2, importexport_pb2
from shared.api.containerd.types.transfer import streaming_pb2 as data_pb2
from shared.diff import Descriptor
from shared.errors import BerthError, DataLoss, InvalidArgument, NotFound
from shared.oci import parse_platform
from shared.proxy.transfer import TransferClient, TransferProgress
from shared.rpc.sync_client import channel
from tests.harness import Suite, wait_until
from tests.integration.test_pull import image_digests, unpacked_tree
from tests.testimages import Images, containerd_tree

MiB = 1 << 20


def import_archive(suite: Suite, ns: str, path: Path, **kwargs: Any) -> list[TransferProgress]:
    events: list[TransferProgress] = []
    with context.using(namespace=ns), path.open("rb") as f:
        TransferClient(channel(suite.address)).import_archive(f, progress=events.append, **kwargs)
    return events


def export_archive(suite: Suite, ns: str, path: Path, *names: str, **kwargs: Any) -> None:
    with context.using(namespace=ns), path.open("wb") as f:
        TransferClient(channel(suite.address)).export_archive(f, list(names), **kwargs)


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def checked(suite: Suite, ns: str) -> dict[str, list[str]]:
    """``ctr images check``: name -> [type, digest, status..., size..., unpacked]."""
    return {r[0]: r[1:] for r in rows(suite.ctr("images", "check", namespace=ns).stdout)}


def assert_complete_and_unpacked(suite: Suite, ns: str, name: str) -> None:
    row = checked(suite, ns)[name]
    assert row[2] == "complete", row
    assert row[-1] == "true", row


def nothing_left_behind(suite: Suite, ns: str) -> None:
    assert image_digests(suite, ns) == {}
    assert rows(suite.ctr("content", "active", namespace=ns).stdout) == []  # no ingest
    assert rows(suite.ctr("leases", "ls", namespace=ns).stdout) == []  # the import's lease


def local_name(ref: str) -> str:
    return f"localhost/testimages/{ref}:latest"


# -- naming: the cases of containerd's pkg/transfer/image/imagestore_test.go --------

P = ImageReference


@pytest.mark.parametrize(
    ("references", "annotation", "value", "expected"),
    [
        ([P("registry.test/image", is_prefix=True)], "OCI", "registry.test/image:latest",
         ["registry.test/image:latest"]),
        ([P("registry.test/image", is_prefix=True)], "containerd", "registry.test/image:latest",
         ["registry.test/image:latest"]),
        ([P("placeholder", is_prefix=True, allow_overwrite=True)], "OCI",
         "registry.test/image:latest", ["registry.test/image:latest"]),
        ([P("placeholder", is_prefix=True, allow_overwrite=True)], "containerd",
         "registry.test/image:latest", ["registry.test/image:latest"]),
        ([P("registry.test/image", is_prefix=True)], "OCI", "latest",
         ["registry.test/image:latest"]),
        ([P("registry.test/base", is_prefix=True, add_digest=True)], "Annotation", "",
         ["registry.test/base@"]),
        ([P("registry.test/base", is_prefix=True, add_digest=True)], "OCI", "latest",
         ["registry.test/base:latest", "registry.test/base@"]),
        ([P("registry.test/base", is_prefix=True, add_digest=True, skip_named_digest=True)],
         "OCI", "latest", ["registry.test/base:latest"]),
        ([P("base-name", is_prefix=True, allow_overwrite=True, add_digest=True)], "containerd",
         "registry.test/base:latest", ["registry.test/base:latest", "base-name@"]),
        ([P("base-name", is_prefix=True, allow_overwrite=True, add_digest=True,
            skip_named_digest=True)], "OCI", "registry.test/base:latest",
         ["registry.test/base:latest"]),
        ([P("registry.test/image", is_prefix=True)], "containerd", "registry.test/base:latest",
         []),
        ([P("registry.test/image", is_prefix=True)], "OCI", "registry.test/base:latest", []),
        ([], "Annotation", "", []),
        ([], "NoAnnotation", "", []),
        ([P("registry.test/extra:1"), P("registry.test/x", add_digest=True)], "NoAnnotation", "",
         ["registry.test/index:latest", "registry.test/extra:1", "registry.test/x@"]),
    ],
)  # fmt: skip
def test_image_names_as_containerd(
    references: list[ImageReference], annotation: str, value: str, expected: list[str]
) -> None:
    digest = "sha256:" + hashlib.sha256(repr(references).encode()).hexdigest()
    key = {"OCI": "org.opencontainers.image.ref.name",
           "containerd": "io.containerd.image.name"}.get(annotation)  # fmt: skip
    desc = Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1,
                      {key: value} if key else {})  # fmt: skip
    opts = ImportOptions(references=references)
    if annotation == "NoAnnotation":  # the archive's own index, named by the ImageStore
        opts.name = "registry.test/index:latest" if references else ""
    names = names_for(desc, annotation != "NoAnnotation", opts)
    assert names == [n + digest if n.endswith("@") else n for n in expected]


@pytest.mark.parametrize(
    ("name", "tag", "familiar"),
    [
        ("localhost/testimages/multilayer:latest", "latest", "localhost/testimages/multilayer:latest"),
        ("docker.io/library/alpine:3.19", "3.19", "alpine:3.19"),
        ("docker.io/user/app:1", "1", "user/app:1"),
        ("127.0.0.1:5000/a/b@sha256:" + "a" * 64, "@sha256:" + "a" * 64,
         "127.0.0.1:5000/a/b@sha256:" + "a" * 64),
        ("import-2024-01-01:latest", "", "import-2024-01-01:latest"),
    ],
)  # fmt: skip
def test_reference_names(name: str, tag: str, familiar: str) -> None:
    assert reference_object(name) == tag  # what org.opencontainers.image.ref.name carries
    assert familiar_name(name) == familiar  # what manifest.json's RepoTags carry


# -- import -------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["busybox", "multilayer", "multilayer-zstd", "multiarch"])
def test_import_test_image_archives(
    suite: Suite, testimages: Images, ref: str, tmp_path: Path
) -> None:
    ns = f"xfer-import-{ref}"
    events = import_archive(suite, ns, testimages.archive(ref))
    assert image_digests(suite, ns) == {local_name(ref): testimages.digest(ref)}
    assert_complete_and_unpacked(suite, ns, local_name(ref))
    assert events[0].event == "Importing"
    assert events[-1].event == "Completed import"
    assert ("saved", local_name(ref)) in {(e.event, e.name) for e in events}
    assert {e.name for e in events if e.event == "unpacked"} == {
        f"layer-{lay.digest}" for lay in testimages.layers(ref)
    }
    if ref.startswith("multilayer"):
        assert unpacked_tree(suite, ns, testimages, ref, tmp_path) == containerd_tree()
    if ref == "multiarch":  # only the host's platform was walked, but the index keeps both
        arm64 = testimages.resolve("multiarch", "linux/arm64").digest
        index = testimages.digest("multiarch")
        labels = suite.ctr("content", "ls", namespace=ns).stdout
        assert any(index in line and arm64 in line for line in labels.splitlines())


def test_import_names_with_a_base_name_and_platforms(suite: Suite, testimages: Images) -> None:
    ns = "xfer-import-named"
    # A base name that the archive's full names are not under: nothing is named (as ctr 1.7).
    import_archive(suite, ns, testimages.archive("busybox"), name="example.com/other")
    assert image_digests(suite, ns) == {}
    import_archive(suite, ns, testimages.archive("busybox"), name="localhost/testimages/busybox")
    assert image_digests(suite, ns) == {local_name("busybox"): testimages.digest("busybox")}
    # An explicit platform: arm64 is walked and unpacked, not amd64.
    import_archive(
        suite, ns, testimages.archive("multiarch"), platforms=[parse_platform("linux/arm64")]
    )
    arm64 = testimages.layers("multiarch", "linux/arm64")[-1].digest
    content = suite.ctr("content", "ls", namespace=ns).stdout
    assert any(line.startswith(arm64) and "containerd.io/uncompressed" in line
               for line in content.splitlines())  # fmt: skip


def docker_save(images: Images, ref: str, path: Path, tag: str) -> None:
    """What ``docker save`` (before docker 25) writes: a directory per layer with its
    uncompressed ``layer.tar``, the config as ``<id>.json``, then manifest.json."""
    config_digest = images.manifest(ref)["config"]["digest"]
    config = images.blob(config_digest)
    layer_paths = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for layer in images.layers(ref):
            layer_id = hashlib.sha256(layer.diff_id.encode()).hexdigest()
            with layer.open_tar() as f:
                data = f.read()
            info = tarfile.TarInfo(layer_id)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            add(f"{layer_id}/VERSION", b"1.0")
            add(f"{layer_id}/json", json.dumps({"id": layer_id}).encode())
            add(f"{layer_id}/layer.tar", data)
            layer_paths.append(f"{layer_id}/layer.tar")
        add(f"{config_digest.split(':')[1]}.json", config)
        manifest = [{"Config": f"{config_digest.split(':')[1]}.json", "RepoTags": [tag],
                     "Layers": layer_paths}]  # fmt: skip
        add("manifest.json", json.dumps(manifest).encode())
        add("repositories", json.dumps({tag.split(":")[0]: {tag.split(":")[1]: "x"}}).encode())


def test_import_docker_save_archive(suite: Suite, testimages: Images, tmp_path: Path) -> None:
    archive = tmp_path / "docker.tar"
    docker_save(testimages, "multilayer", archive, "berth-test/multilayer:docker")
    name = "docker.io/berth-test/multilayer:docker"
    ns = "xfer-docker"
    import_archive(suite, ns, archive)
    digest = image_digests(suite, ns)[name]
    assert_complete_and_unpacked(suite, ns, name)
    assert unpacked_tree(suite, ns, testimages, "multilayer", tmp_path) == containerd_tree()
    # containerd builds the very same manifest from it (its ImportIndex is the oracle).
    suite.ctr("images", "import", str(archive), namespace=f"{ns}-ctr")
    assert image_digests(suite, f"{ns}-ctr")[name] == digest
    # The manifest is docker's, its layers the uncompressed tars.
    manifest = json.loads(suite.ctr("content", "get", digest, namespace=ns).stdout)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {lay["mediaType"] for lay in manifest["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar"
    }
    assert [lay["digest"] for lay in manifest["layers"]] == [
        lay.diff_id for lay in testimages.layers("multilayer")
    ]


# -- export -------------------------------------------------------------------------


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(path: Path, name: str) -> Any:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return json.load(f)


def test_export_is_read_by_ctr(suite: Suite, testimages: Images, tmp_path: Path) -> None:
    ns = "xfer-export"
    import_archive(suite, ns, testimages.archive("multilayer"))
    exported = tmp_path / "out.tar"
    export_archive(suite, ns, exported, local_name("multilayer"))
    found = members(exported)
    assert list(found) == sorted(found)  # as containerd sorts them
    assert list(found)[-3:] == ["index.json", "manifest.json", "oci-layout"]
    index = read_member(exported, "index.json")
    assert index["manifests"] == [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": testimages.digest("multilayer"), "size": testimages.size("multilayer"),
        "annotations": {"io.containerd.image.name": local_name("multilayer"),
                        "org.opencontainers.image.ref.name": "latest"},
    }]  # fmt: skip
    docker = read_member(exported, "manifest.json")
    layers = [f"blobs/sha256/{lay.digest.split(':')[1]}" for lay in testimages.layers("multilayer")]
    assert docker == [{
        "Config": "blobs/sha256/" + testimages.manifest("multilayer")["config"]["digest"][7:],
        "RepoTags": [local_name("multilayer")], "Layers": layers,
    }]  # fmt: skip
    assert all(name in found for name in layers)
    # containerd's ctr reads it, in another namespace.
    suite.ctr("images", "import", str(exported), namespace=f"{ns}-ctr")
    assert image_digests(suite, f"{ns}-ctr") == {
        local_name("multilayer"): testimages.digest("multilayer")
    }
    assert_complete_and_unpacked(suite, f"{ns}-ctr", local_name("multilayer"))
    # And so does berth: the round trip keeps the digest.
    import_archive(suite, f"{ns}-again", exported)
    assert image_digests(suite, f"{ns}-again") == image_digests(suite, ns)


def test_ctr_export_is_imported(suite: Suite, testimages: Images, tmp_path: Path) -> None:
    ns = "xfer-from-ctr"
    suite.ctr("images", "import", str(testimages.archive("multilayer")), namespace=ns)
    exported = tmp_path / "ctr.tar"
    suite.ctr("images", "export", str(exported), local_name("multilayer"), namespace=ns)
    import_archive(suite, f"{ns}-berth", exported)
    assert image_digests(suite, f"{ns}-berth") == {
        local_name("multilayer"): testimages.digest("multilayer")
    }
    assert_complete_and_unpacked(suite, f"{ns}-berth", local_name("multilayer"))


def test_export_multiarch(suite: Suite, testimages: Images, tmp_path: Path) -> None:
    ns = "xfer-export-multiarch"
    import_archive(suite, ns, testimages.archive("multiarch"))  # the archive has both
    amd64 = testimages.resolve("multiarch", "linux/amd64").digest
    arm64 = testimages.resolve("multiarch", "linux/arm64").digest
    host = tmp_path / "host.tar"
    export_archive(suite, ns, host, local_name("multiarch"))
    found = members(host)
    assert f"blobs/sha256/{amd64[7:]}" in found
    assert f"blobs/sha256/{arm64[7:]}" not in found  # the host's platform only
    assert read_member(host, "manifest.json")[0]["RepoTags"] == [local_name("multiarch")]
    every = tmp_path / "all.tar"
    export_archive(suite, ns, every, local_name("multiarch"), all_platforms=True,
                   skip_compatibility_manifest=True)  # fmt: skip
    found = members(every)
    assert f"blobs/sha256/{arm64[7:]}" in found
    assert "manifest.json" not in found
    for archive, target in ((host, "host"), (every, "all")):
        suite.ctr("images", "import", str(archive), namespace=f"{ns}-ctr-{target}")
        assert image_digests(suite, f"{ns}-ctr-{target}") == {
            local_name("multiarch"): testimages.digest("multiarch")
        }
        import_archive(suite, f"{ns}-again-{target}", archive)
        assert image_digests(suite, f"{ns}-again-{target}") == {
            local_name("multiarch"): testimages.digest("multiarch")
        }


def test_export_of_missing_images_and_platforms(
    suite: Suite, testimages: Images, tmp_path: Path
) -> None:
    ns = "xfer-export-missing"
    with pytest.raises(NotFound):
        export_archive(suite, ns, tmp_path / "none.tar", "localhost/no/such:image")
    import_archive(suite, ns, testimages.archive("multiarch"))
    with pytest.raises(NotFound, match="platform"):
        export_archive(suite, ns, tmp_path / "s390x.tar", local_name("multiarch"),
                       platforms=[parse_platform("linux/s390x")])  # fmt: skip


# -- bad archives ---------------------------------------------------------------------


def rewrite(source: Path, dest: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """Copy an archive, changing (or, for None, dropping) members."""
    with tarfile.open(source) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            f = src.extractfile(member)
            data = f.read() if f else b""
            new = change(member.name, data)
            if new is None:
                continue
            member.size = len(new)
            out.addfile(member, io.BytesIO(new) if f else None)


def test_bad_archives(suite: Suite, testimages: Images, tmp_path: Path) -> None:
    source = testimages.archive("multilayer")
    big_layer = max(testimages.layers("multilayer"), key=lambda lay: lay.size)
    big_path = f"blobs/sha256/{big_layer.digest[7:]}"
    cases: dict[str, tuple[type[BerthError], str]] = {}

    truncated = tmp_path / "truncated.tar"
    data = source.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    cases["truncated"] = (InvalidArgument, "truncated")

    wrong = tmp_path / "wrong.tar"
    rewrite(source, wrong, lambda name, d: bytes(reversed(d)) if name == big_path else d)
    cases["wrong"] = (DataLoss, "does not match its digest")

    missing = tmp_path / "missing.tar"
    rewrite(source, missing, lambda name, d: None if name == big_path else d)
    cases["missing"] = (InvalidArgument, f"{big_layer.digest}.*neither in the archive")

    garbage_index = tmp_path / "garbage-index.tar"
    rewrite(source, garbage_index, lambda name, d: b"{not json" if name == "index.json" else d)
    cases["garbage-index"] = (InvalidArgument, "index.json is not valid JSON")

    huge = tmp_path / "huge-manifest.tar"
    blob = b'{"schemaVersion":2,"config":{}' + b" " * (4 * MiB) + b"}"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
        "size": len(blob), "annotations": {"io.containerd.image.name": "localhost/huge:1"}}]}  # fmt: skip
    with tarfile.open(huge, "w") as tar:
        for name, content in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                              ("index.json", json.dumps(index).encode()),
                              (f"blobs/sha256/{digest[7:]}", blob)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    cases["huge-manifest"] = (InvalidArgument, "over the 4194304-byte limit")

    noise = tmp_path / "noise.tar"  # refused at once, while the client still has plenty to send
    noise.write_bytes(os.urandom(16 * MiB))
    cases["noise"] = (InvalidArgument, "no valid tar header at byte 0")

    paths = {"truncated": truncated, "wrong": wrong, "missing": missing,
             "garbage-index": garbage_index, "huge-manifest": huge, "noise": noise}  # fmt: skip
    for case, (error, message) in cases.items():
        ns = f"xfer-bad-{case}"
        with pytest.raises(error, match=message):
            import_archive(suite, ns, paths[case])
        nothing_left_behind(suite, ns)


class FailingFile(io.RawIOBase):
    """An archive whose reading fails part-way (a disk error, a pipe that broke)."""

    def __init__(self, path: Path, fail_at: int) -> None:
        self.f = path.open("rb")
        self.fail_at = fail_at

    def read(self, size: int = -1) -> bytes:
        if self.f.tell() >= self.fail_at:
            raise OSError("simulated read error")
        return self.f.read(min(size, self.fail_at - self.f.tell()))


def test_a_client_read_error_is_the_error(suite: Suite, testimages: Images) -> None:
    ns = "xfer-bad-read"
    source = FailingFile(testimages.archive("multilayer"), 300_000)
    with context.using(namespace=ns), pytest.raises(OSError, match="simulated read error"):
        TransferClient(channel(suite.address)).import_archive(source)
    source.f.close()
    nothing_left_behind(suite, ns)


def test_what_a_failed_import_wrote_is_collected(
    fresh_suite: Suite, testimages: Images, tmp_path: Path
) -> None:
    ns = "xfer-collected"
    wrong = tmp_path / "wrong.tar"
    last = max(testimages.layers("multilayer"), key=lambda lay: lay.digest)
    rewrite(testimages.archive("multilayer"), wrong,
            lambda name, d: d[::-1] if name == f"blobs/sha256/{last.digest[7:]}" else d)  # fmt: skip
    with pytest.raises(DataLoss):
        import_archive(fresh_suite, ns, wrong)
    written = rows(fresh_suite.ctr("content", "ls", namespace=ns).stdout)
    assert len(written) >= 5  # the blobs before the wrong one, held by the import's lease
    nothing_left_behind(fresh_suite, ns)
    # A deletion wakes the collector: with the lease gone, nothing keeps them.
    fresh_suite.ctr("content", "ingest", "poke", input=b"poke", namespace=ns)
    fresh_suite.ctr("content", "rm", "sha256:" + hashlib.sha256(b"poke").hexdigest(), namespace=ns)
    wait_until(lambda: not rows(fresh_suite.ctr("content", "ls", namespace=ns).stdout), 30,
               what="the collector to remove what the failed import wrote")  # fmt: skip


# -- flow control ---------------------------------------------------------------------


def peak_rss_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_big_import_and_export_stream(suite: Suite, testimages_big: Images, tmp_path: Path) -> None:
    ns = "xfer-big"
    pid = suite.processes()["images"]
    archive = testimages_big.archive("big")
    peak_rss_reset(pid)
    before = peak_rss(pid)
    started = time.monotonic()
    import_archive(suite, ns, archive)
    imported = time.monotonic() - started
    grown_import = peak_rss(pid) - before
    assert image_digests(suite, ns) == {local_name("big"): testimages_big.digest("big")}

    exported = tmp_path / "big.tar"
    peak_rss_reset(pid)
    before = peak_rss(pid)
    started = time.monotonic()
    export_archive(suite, ns, exported, local_name("big"))
    took = time.monotonic() - started
    grown_export = peak_rss(pid) - before
    print(f"big: import {imported:.1f}s (+{grown_import / MiB:.1f} MiB peak), "
          f"export {took:.1f}s (+{grown_export / MiB:.1f} MiB peak)")  # fmt: skip
    assert grown_import < 64 * MiB
    assert grown_export < 64 * MiB
    assert exported.stat().st_size > 80_000_000
    assert read_member(exported, "index.json")["manifests"][0]["digest"] == testimages_big.digest(
        "big"
    )


class GoStyleReceiver:
    """containerd's ReceiveStream, by hand: grants 64 KiB whenever less than that is left."""

    WINDOW = 64 << 10

    def __init__(self, suite: Suite) -> None:
        self.requests: list[Any] = [
            typeurl.pack(streaming_pb2.StreamInit(id=f"go-{time.time_ns()}"))
        ]
        self.name = streaming_pb2.StreamInit.FromString(self.requests[0].value).id
        self.cond = threading.Condition()
        self.data = bytearray()
        self.granted = 0
        self.paused = True
        stub = streaming_pb2_grpc.StreamingStub(channel(suite.address))
        self.responses: Any = cast(Any, stub.Stream(self._outgoing()))
        next(self.responses)  # registered
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _outgoing(self) -> Any:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.requests)
                item = self.requests.pop(0)
            if item is None:
                return
            yield item

    def grant(self, n: int) -> None:
        with self.cond:
            self.granted += n
            self.requests.append(typeurl.pack(data_pb2.WindowUpdate(update=n)))
            self.cond.notify_all()

    def _run(self) -> None:
        for item in self.responses:
            msg = typeurl.unpack(item)
            assert isinstance(msg, data_pb2.Data)
            with self.cond:
                self.data += msg.data
                self.cond.notify_all()
                paused = self.paused
            if not paused and self.granted - len(self.data) < self.WINDOW:
                self.grant(self.WINDOW)

    def close(self) -> None:
        with self.cond:
            self.requests.append(None)
            self.cond.notify_all()


class GoStyleSender:
    """containerd's SendStream, by hand: sends nothing before the server's first window update,
    then at most 32 KiB per Data message and never beyond the window; CloseSend at the end."""

    def __init__(self, suite: Suite, data: bytes) -> None:
        self.name = f"go-send-{time.time_ns()}"
        self.data = memoryview(data)
        self.sent = 0
        self.granted = 0
        self.requests: queue.Queue[Any] = queue.Queue()
        self.requests.put(typeurl.pack(streaming_pb2.StreamInit(id=self.name)))
        stub = streaming_pb2_grpc.StreamingStub(channel(suite.address))
        self.responses: Any = cast(Any, stub.Stream(iter(self.requests.get, None)))
        next(self.responses)  # registered
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self.responses:
            msg = typeurl.unpack(item)
            assert isinstance(msg, data_pb2.WindowUpdate)
            self.granted += msg.update
            while self.sent < len(self.data) and self.sent < self.granted:
                n = min(32 << 10, self.granted - self.sent)
                piece = self.data[self.sent : self.sent + n].tobytes()
                self.requests.put(typeurl.pack(data_pb2.Data(data=piece)))
                self.sent += len(piece)
            if self.sent >= len(self.data):
                self.requests.put(None)


def test_import_from_a_containerd_style_sender_with_compression(
    suite: Suite, testimages: Images, tmp_path: Path
) -> None:
    archive = tmp_path / "docker.tar"
    docker_save(testimages, "multilayer", archive, "berth-test/compressed:1")
    ns = "xfer-go-sender"
    sender = GoStyleSender(suite, archive.read_bytes())
    store = imagestore_pb2.ImageStore(
        extra_references=[imagestore_pb2.ImageReference(name="x", is_prefix=True,
                                                        allow_overwrite=True)],
        unpacks=[imagestore_pb2.UnpackConfiguration(snapshotter="overlayfs")],
    )  # fmt: skip
    request = transfer_pb2.TransferRequest(
        source=typeurl.pack(
            importexport_pb2.ImageImportStream(stream=sender.name, force_compress=True)
        ),
        destination=typeurl.pack(store),
    )
    with context.using(namespace=ns):
        transfer_pb2_grpc.TransferStub(channel(suite.address)).Transfer(request)
    sender.thread.join(30)
    name = "docker.io/berth-test/compressed:1"
    digest = image_digests(suite, ns)[name]
    manifest = json.loads(suite.ctr("content", "get", digest, namespace=ns).stdout)
    assert {lay["mediaType"] for lay in manifest["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    content = suite.ctr("content", "ls", namespace=ns).stdout
    for blob, layer in zip(manifest["layers"], testimages.layers("multilayer"), strict=True):
        line = next(line for line in content.splitlines() if line.startswith(blob["digest"]))
        assert f"containerd.io/uncompressed={layer.diff_id}" in line
    assert_complete_and_unpacked(suite, ns, name)
    assert unpacked_tree(suite, ns, testimages, "multilayer", tmp_path) == containerd_tree()


def test_export_honours_the_receivers_window(
    suite: Suite, testimages: Images, tmp_path: Path
) -> None:
    ns = "xfer-window"
    import_archive(suite, ns, testimages.archive("multilayer"))
    receiver = GoStyleReceiver(suite)
    receiver.grant(GoStyleReceiver.WINDOW)
    request = transfer_pb2.TransferRequest(
        source=typeurl.pack(imagestore_pb2.ImageStore(name=local_name("multilayer"))),
        destination=typeurl.pack(importexport_pb2.ImageExportStream(stream=receiver.name)),
    )
    errors: list[BaseException] = []

    def transfer() -> None:
        try:
            with context.using(namespace=ns):
                transfer_pb2_grpc.TransferStub(channel(suite.address)).Transfer(request)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=transfer)
    worker.start()
    with receiver.cond:  # all it may send, and then no more
        assert receiver.cond.wait_for(lambda: len(receiver.data) >= GoStyleReceiver.WINDOW, 30)
    time.sleep(1)
    with receiver.cond:
        assert len(receiver.data) == GoStyleReceiver.WINDOW
        receiver.paused = False
    receiver.grant(GoStyleReceiver.WINDOW)
    worker.join(60)
    receiver.thread.join(60)
    receiver.close()
    assert not errors
    mine = tmp_path / "mine.tar"
    export_archive(suite, ns, mine, local_name("multilayer"))
    assert bytes(receiver.data) == mine.read_bytes()
