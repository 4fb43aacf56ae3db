"""Real OCI test images and a real registry for tests, built by the shared builder.

The images come from ``build.sh`` of the ``testimages`` builder (outside this repo, found by
:func:`testimages_dir`; never copy it in). It writes deterministic images offline into a cache
directory that survives test runs; ``build.sh`` is idempotent, so :func:`build` is cheap after
the first call. Everything here reads the OCI layout with the standard library only, never with
berth code, so it can be the oracle for berth's snapshots, images and runtime services.

Refs: ``busybox``, ``multilayer`` (5 gzip layers with whiteouts, an opaque dir, setuid files,
links, uid 1000), ``multilayer-zstd`` (same diff IDs), ``multiarch`` (an index: linux/amd64
and linux/arm64/v8) and, unless ``no_big``, ``big`` (83 MB gzip).

Errors::

    ImagesError          builder missing, build.sh or registry.sh failed
     └── CorruptCache    a blob or archive does not match its digest, even after a rebuild
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import zstandard

from tests.harness import free_port, pid_alive, short_tempdir, wait_until

ENV = "BERTH_TESTIMAGES"
REPO = Path(__file__).resolve().parent.parent
CACHE = Path("/var/tmp/berth-testimages")
CACHE_NO_BIG = Path("/var/tmp/berth-testimages-nobig")
UMOCI = shutil.which("umoci") or "/usr/bin/umoci"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
ACCEPT = ", ".join([MT_MANIFEST, MT_INDEX])
CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ImagesError(RuntimeError):
    pass


class CorruptCache(ImagesError):
    pass


def testimages_dir() -> Path:
    """The builder: ``$BERTH_TESTIMAGES``, else ``<repo>/../shared/testimages``, else
    ``/work/shared/testimages``. An explicit ``$BERTH_TESTIMAGES`` is never second-guessed."""
    env = os.environ.get(ENV)
    tried = (
        [Path(env)] if env else [REPO.parent / "shared/testimages", Path("/work/shared/testimages")]
    )
    for candidate in tried:
        if (candidate / "build.sh").is_file():
            return candidate
    raise ImagesError(
        "testimages builder not found; tried "
        + ", ".join(f"{p}/build.sh" for p in tried)
        + ("" if env else f" (set ${ENV} to the directory holding build.sh)")
    )


def containerd_tree() -> str:
    """``multilayer.containerd-tree.txt``: how containerd 1.6.20 unpacks ``multilayer``."""
    return (testimages_dir() / "multilayer.containerd-tree.txt").read_text()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _platform_matches(platform: dict[str, Any], wanted: str) -> bool:
    os_, arch, *variant = wanted.split("/")
    return (
        platform.get("os") == os_
        and platform.get("architecture") == arch
        and (not variant or platform.get("variant") == variant[0])
    )


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]
    platform: dict[str, Any] | None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Descriptor:
        return cls(d["mediaType"], d["digest"], d["size"], d.get("annotations", {}),
                   d.get("platform"))  # fmt: skip


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str
    path: Path  # the (compressed) blob file

    @contextlib.contextmanager
    def open_tar(self) -> Iterator[Readable]:
        """The uncompressed layer tar as a stream."""
        with self.path.open("rb") as raw:
            if self.media_type.endswith("+gzip"):
                with gzip.GzipFile(fileobj=raw) as g:
                    yield g
            elif self.media_type.endswith("+zstd"):
                with zstandard.ZstdDecompressor().stream_reader(raw) as z:
                    yield z
            else:
                yield raw

    def compute_diff_id(self) -> str:
        h = hashlib.sha256()
        with self.open_tar() as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return "sha256:" + h.hexdigest()


class Images:
    """A built output directory of ``build.sh``; only reads, verifying every blob it opens."""

    def __init__(self, out: Path, *, no_big: bool) -> None:
        self.out = out
        self.no_big = no_big
        self.layout = out / "oci"
        self._archives_ok: set[str] = set()

    def __repr__(self) -> str:
        return f"Images({str(self.out)!r})"

    @property
    def expected_multilayer(self) -> Path:
        """``multilayer.expected``: the merged rootfs of ``multilayer``, written out by hand."""
        return self.out / "multilayer.expected"

    def table(self) -> dict[str, dict[str, str]]:
        """``images.tsv`` by ref: mediaType, digest, size, description."""
        with (self.out / "images.tsv").open(newline="") as f:
            return {row["ref"]: row for row in csv.DictReader(f, delimiter="\t")}

    def refs(self) -> list[str]:
        return list(self.table())

    def _row(self, ref: str) -> dict[str, str]:
        try:
            return self.table()[ref]
        except KeyError:
            raise KeyError(f"no ref {ref!r} in {self.out}/images.tsv") from None

    def digest(self, ref: str) -> str:
        return self._row(ref)["digest"]

    def media_type(self, ref: str) -> str:
        return self._row(ref)["mediaType"]

    def size(self, ref: str) -> int:
        return int(self._row(ref)["size"])

    def archive(self, ref: str) -> Path:
        """``archives/<ref>.tar``, shaped like ``ctr image export`` (named
        ``localhost/testimages/<ref>:latest``); checked once per ref against ``images.tsv``."""
        path = self.out / "archives" / f"{ref}.tar"
        if ref not in self._archives_ok:
            self._check_archive(ref, path)
            self._archives_ok.add(ref)
        return path

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.layout / "blobs" / algorithm / hexdigest

    def blob(self, digest: str) -> bytes:
        """The blob's bytes after checking their sha256; a mismatch rebuilds the cache once."""
        for attempt in range(2):
            data = self.blob_path(digest).read_bytes()
            if "sha256:" + hashlib.sha256(data).hexdigest() == digest:
                return data
            if attempt == 0:
                self.rebuild(f"blob {digest} does not match its digest")
        raise CorruptCache(f"{self.blob_path(digest)} does not match {digest} after a rebuild")

    def json_blob(self, digest: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.blob(digest))
        return value

    def index(self) -> dict[str, Any]:
        """The layout's ``index.json`` (not content-addressed, so not verified)."""
        value: dict[str, Any] = json.loads((self.layout / "index.json").read_text())
        return value

    def descriptor(self, ref: str) -> Descriptor:
        """The layout index entry named ``ref``."""
        for d in self.index()["manifests"]:
            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
                return Descriptor.parse(d)
        raise KeyError(f"no ref {ref!r} in {self.layout}/index.json")

    def resolve(self, ref: str, platform: str = "linux/amd64") -> Descriptor:
        """The manifest descriptor of ``ref``, choosing ``platform`` ("os/arch[/variant]")
        from an index."""
        desc = self.descriptor(ref)
        while desc.media_type == MT_INDEX:
            entries = [Descriptor.parse(d) for d in self.json_blob(desc.digest)["manifests"]]
            chosen = [d for d in entries if d.platform and _platform_matches(d.platform, platform)]
            if not chosen:
                raise LookupError(f"{ref}: no manifest for platform {platform}")
            desc = chosen[0]
        return desc

    def manifest(self, ref: str, platform: str = "linux/amd64") -> dict[str, Any]:
        return self.json_blob(self.resolve(ref, platform).digest)

    def config(self, ref: str, platform: str = "linux/amd64") -> dict[str, Any]:
        return self.json_blob(self.manifest(ref, platform)["config"]["digest"])

    def layers(self, ref: str, platform: str = "linux/amd64") -> list[Layer]:
        manifest = self.manifest(ref, platform)
        diff_ids = self.json_blob(manifest["config"]["digest"])["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise ImagesError(f"{ref}: {len(manifest['layers'])} layers, {len(diff_ids)} diff_ids")
        return [
            Layer(d["digest"], d["mediaType"], d["size"], diff_id, self.blob_path(d["digest"]))
            for d, diff_id in zip(manifest["layers"], diff_ids, strict=True)
        ]

    def rebuild(self, reason: str) -> None:
        """Run ``build.sh --force`` under the cache lock and check the result."""
        with _locked(self.out):
            _run_build(self.out, no_big=self.no_big, force=True, reason=reason)
            problems = self.verify()
            if not problems:
                _verified[self.out] = (self.out / ".stamp").read_text()
        self._archives_ok.clear()
        if problems:
            raise CorruptCache(f"{self.out} still corrupt after build.sh --force: {problems}")

    def verify(self) -> list[str]:
        """Problems found: every blob must hash to its name, every ref of ``images.tsv`` must
        be in the index with the same digest and have an archive."""
        problems = []
        for path in sorted((self.layout / "blobs" / "sha256").iterdir()):
            if sha256_file(path) != f"sha256:{path.name}":
                problems.append(f"blob {path.name} does not match its digest")
        for ref, row in self.table().items():
            try:
                if self.descriptor(ref).digest != row["digest"]:
                    problems.append(f"{ref}: index.json and images.tsv disagree")
            except KeyError:
                problems.append(f"{ref}: not in index.json")
            if not (self.out / "archives" / f"{ref}.tar").is_file():
                problems.append(f"{ref}: no archive")
        return problems

    def _check_archive(self, ref: str, path: Path) -> None:
        for attempt in range(2):
            problem = _archive_problem(path, self.digest(ref))
            if problem is None:
                return
            if attempt == 0:
                self.rebuild(f"{path}: {problem}")
        raise CorruptCache(f"{path}: {problem} after a rebuild")


def _archive_problem(path: Path, digest: str) -> str | None:
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                f = tar.extractfile(member)
                if f is None:
                    continue
                if member.name == "index.json":
                    if json.load(f)["manifests"][0]["digest"] != digest:
                        return "index.json names another manifest"
                elif member.name.startswith("blobs/sha256/"):
                    h = hashlib.sha256()
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                    if h.hexdigest() != member.name.rsplit("/", 1)[1]:
                        return f"{member.name} does not match its digest"
    except (OSError, tarfile.TarError, ValueError, KeyError, IndexError) as e:
        return f"unreadable ({e})"
    return None


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock beside ``out``, so concurrent test processes build it once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_build(out: Path, *, no_big: bool, force: bool, reason: str = "") -> None:
    argv = [str(testimages_dir() / "build.sh"), *(["--force"] if force else []),
            *(["--no-big"] if no_big else []), str(out)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    if result.returncode != 0:
        why = f" (rebuilding: {reason})" if reason else ""
        raise ImagesError(
            f"{' '.join(argv)} exited {result.returncode}{why}\n{result.stdout}{result.stderr}"
        )


_verified: dict[Path, str] = {}  # out -> .stamp checked in this process


def build(no_big: bool = False, out: Path | None = None) -> Images:
    """Build (or reuse) the images in ``out`` (default: a cache dir under /var/tmp, one with
    and one without ``big``) and check every blob; a corrupt cache is rebuilt with --force."""
    out = out or (CACHE_NO_BIG if no_big else CACHE)
    images = Images(out, no_big=no_big)
    with _locked(out):
        _run_build(out, no_big=no_big, force=False)
        stamp = (out / ".stamp").read_text()
        if _verified.get(out) == stamp:
            return images
        if problems := images.verify():
            _run_build(out, no_big=no_big, force=True, reason="; ".join(problems[:5]))
            stamp = (out / ".stamp").read_text()
            if problems := images.verify():
                raise CorruptCache(f"{out} still corrupt after build.sh --force: {problems}")
        _verified[out] = stamp
    return images


def tree_listing(rootfs: Path) -> str:
    """``tree-listing.sh``: the format of ``multilayer.containerd-tree.txt``."""
    result = subprocess.run([str(testimages_dir() / "tree-listing.sh"), str(rootfs)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    if result.returncode != 0:
        raise ImagesError(f"tree-listing.sh {rootfs} exited {result.returncode}: {result.stderr}")
    return result.stdout


def umoci_unpack(images: Images, ref: str, dest: Path) -> Path:
    """``umoci unpack`` ``ref`` into ``dest`` (which must not exist); returns ``dest/rootfs``.

    As root, ``tree_listing`` of ``multilayer`` unpacked this way equals
    ``multilayer.containerd-tree.txt`` line for line (umoci 0.4.7 applies the whiteouts and
    the opaque directory as containerd does, and keeps the hardlink of tool/tool-hardlink).
    Differences the listing does not show:

    - nlink: ``opt/app/data/keep-hardlink.txt`` has 1 link here, 2 under containerd's
      overlayfs (its lower inode is shared with the replaced ``keep.txt``).
    - mtimes: every entry from a layer has the tar's mtime (2024-01-01T00:00:00Z, whiteouts
      notwithstanding), but the rootfs directory itself is set to 1970-01-01T00:00:00Z; under
      containerd the snapshot root is not from any layer either.
    - Non-root, ``--rootless`` is used and every file belongs to the caller, so
      ``home/user`` and ``home/user/owned.txt`` are no longer ``1000:1000``.

    umoci 0.4.7 cannot unpack ``multilayer-zstd`` ("blob is not correct mediatype ...
    tar+zstd") nor ``multiarch`` ("tag is ambiguous": it does not choose a platform).
    ``dest`` also receives umoci's ``config.json``, ``umoci.json`` and an mtree manifest.
    """
    argv = [UMOCI, "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
            "--image", f"{images.layout}:{ref}", str(dest)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ImagesError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return dest / "rootfs"


_running: set[Registry] = set()


class Registry:
    """Debian's ``docker-registry`` on 127.0.0.1, loaded with ``images`` as ``registry.sh up`` does
    (or empty with ``images=None``), its storage in a temporary directory of ours.

    :meth:`stop` kills the registry by the PID in registry.sh's pid file and removes the
    state; it also runs at interpreter exit for any registry still up.
    """

    def __init__(self, images: Images | None) -> None:
        self.images = images
        self.state = short_tempdir("berth-registry-")
        self.port = 0
        self.pid: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def ref(self, name: str) -> str:
        return f"{self.address}/testimages/{name}:latest"

    @property
    def config_path(self) -> Path:
        return self.state / "config.yml"

    def start(self, attempts: int = 3) -> Registry:
        """``registry.sh start`` on a free port (retried: the port may be taken meanwhile, and
        registry.sh can misread a registry still starting as exited), then ``registry.sh push``
        of every ref of ``images`` -- what ``registry.sh up`` does, with a retry between."""
        _running.add(self)
        try:
            for attempt in range(1, attempts + 1):
                self.port = free_port()
                result = self._script("start", str(self.port))
                self.pid = self._pid_from_file()
                if result.returncode == 0 and self.pid is not None:
                    break
                failure = f"registry.sh start exited {result.returncode}:\n{result.stderr}"
                failure += f"\n{self._log()}"
                self.stop(remove_state=False)  # a registry that came up late, if any
                if attempt == attempts:
                    raise ImagesError(f"{failure}\n(attempt {attempt} of {attempts})")
            if self.images is not None:
                result = self._script("push", str(self.port), str(self.images.out))
                if result.returncode != 0:
                    raise ImagesError(f"registry.sh push exited {result.returncode}:\n"
                                      f"{result.stderr}\n{self._log()}")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def _script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(testimages_dir() / "registry.sh"), *args],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
            env={**os.environ, "REGISTRY_STATE_DIR": str(self.state)}, start_new_session=True,
        )  # fmt: skip

    def _log(self) -> str:
        try:
            return (self.state / "registry.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def _pid_from_file(self) -> int | None:
        """The PID in registry.sh's pid file if it is our registry. registry.sh writes the PID
        of a subshell that only then execs the registry: give that a moment."""
        try:
            pid = int((self.state / "registry.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: self._is_ours(pid) or not pid_alive(pid), 5)
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return str(self.config_path).encode() in cmdline.split(b"\0")

    def stop(self, remove_state: bool = True) -> None:
        """Kill the registry by its PID (TERM, then KILL), then remove its state directory."""
        for pid in {p for p in (self.pid, self._pid_from_file()) if p is not None}:
            if not self._is_ours(pid):
                continue  # gone, and the PID perhaps reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda pid=pid: not pid_alive(pid), 5, what=f"registry {pid} to exit")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_until(lambda pid=pid: not pid_alive(pid), 5, what=f"registry {pid} to die")
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            (self.state / "registry.pid").unlink()
        if remove_state:
            shutil.rmtree(self.state, ignore_errors=True)
            _running.discard(self)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@atexit.register
def _stop_registries() -> None:
    for registry in list(_running):
        registry.stop()
