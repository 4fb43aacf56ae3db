"""One behaviour for every content Store: raw, namespaced, over gRPC, through the gateway.

Subclass :class:`ContentStoreConformance` in a ``Test*`` class and provide the
``store`` fixture. Tests run with namespace ``conformance`` in the request context.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from shared import context
from shared.content import Store
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)

NAMESPACE = "conformance"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put(
    store: Store, data: bytes, ref: str | None = None, labels: dict[str, str] | None = None
) -> str:
    digest = digest_of(data)
    w = store.writer(ref or f"put-{digest}", total=len(data), expected=digest)
    try:
        w.write(data)
        w.commit(len(data), digest, labels)
    finally:
        w.close()
    return digest


def read_all(store: Store, digest: str, offset: int = 0, size: int = 0) -> bytes:
    return b"".join(store.read(digest, offset, size))


class ContentStoreConformance:
    supports_labels = True
    namespace = NAMESPACE  # stores shared between test classes need one each

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _namespace(self) -> Iterator[None]:
        with context.using(namespace=self.namespace):
            yield

    def test_write_commit_info_read(self, store: Store) -> None:
        data = os.urandom(3 * (1 << 20) + 123)  # several chunks and a partial one
        digest = digest_of(data)
        w = store.writer("blob-1", total=len(data), expected=digest)
        try:
            for start in range(0, len(data), 1 << 20):
                assert w.write(data[start : start + (1 << 20)]) == min(1 << 20, len(data) - start)
            assert w.status().offset == len(data)
            assert w.digest() == digest
            info = w.commit(len(data), digest)
        finally:
            w.close()
        assert info.digest == digest
        assert info.size == len(data)
        assert store.info(digest).size == len(data)
        assert read_all(store, digest) == data
        assert read_all(store, digest, 5, 10) == data[5:15]
        assert read_all(store, digest, len(data) - 3) == data[-3:]
        assert read_all(store, digest, len(data)) == b""
        with pytest.raises(OutOfRange):
            read_all(store, digest, len(data) + 1)
        with pytest.raises(NotFound):
            store.status("blob-1")

    def test_empty_blob(self, store: Store) -> None:
        digest = put(store, b"")
        assert store.info(digest).size == 0
        assert read_all(store, digest) == b""

    def test_missing_blob(self, store: Store) -> None:
        missing = digest_of(b"never written")
        with pytest.raises(NotFound):
            store.info(missing)
        with pytest.raises(NotFound):
            store.read(missing)
        with pytest.raises(NotFound):
            store.delete(missing)

    @pytest.mark.parametrize(
        "bad", ["", "sha256:zz", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256:" + "a" * 63,
                "sha256:../../etc/passwd", "../sha256:" + "a" * 64],
    )  # fmt: skip
    def test_malformed_digests(self, store: Store, bad: str) -> None:
        with pytest.raises(InvalidArgument):
            store.info(bad)
        with pytest.raises(InvalidArgument):
            store.read(bad)
        with pytest.raises(InvalidArgument):
            store.delete(bad)
        if bad:
            with pytest.raises(InvalidArgument):
                store.writer("ref-with-bad-expected", expected=bad)

    @pytest.mark.parametrize(
        "bad", ["", "../../etc/passwd", "/abs", "a/../b", "nul\x00ref", "x" * 600]
    )
    def test_malformed_refs(self, store: Store, bad: str) -> None:
        with pytest.raises(InvalidArgument):
            store.writer(bad)

    def test_commit_verifies_digest_and_size(self, store: Store) -> None:
        data = b"hello, verification"
        w = store.writer("verify", total=len(data))
        try:
            w.write(data)
            with pytest.raises(FailedPrecondition, match="digest"):
                w.commit(len(data), digest_of(b"something else"))
        finally:
            w.close()
        # A failed commit ends the writer (and its gRPC stream); the ref reopens.
        w = store.writer("verify")
        try:
            with pytest.raises(FailedPrecondition, match="size"):
                w.commit(len(data) + 1, digest_of(data))
        finally:
            w.close()
        # Nothing became visible; the ingest is still there to inspect or resume.
        with pytest.raises(NotFound):
            store.info(digest_of(data))
        assert store.status("verify").offset == len(data)
        store.abort("verify")
        with pytest.raises(NotFound):
            store.status("verify")
        with pytest.raises(NotFound):
            store.abort("verify")

    def test_existing_blob(self, store: Store) -> None:
        data = b"already here"
        digest = put(store, data)
        with pytest.raises(AlreadyExists):
            store.writer("again", expected=digest)
        # Written without announcing the digest: the commit finds it present.
        w = store.writer("again-blind")
        try:
            w.write(data)
            with pytest.raises(AlreadyExists):
                w.commit(len(data), digest)
        finally:
            w.close()
        assert read_all(store, digest) == data

    def test_resume_after_close(self, store: Store) -> None:
        data = os.urandom(2 * (1 << 20) + 7)
        digest = digest_of(data)
        w = store.writer("resume", total=len(data), expected=digest)
        w.write(data[: 1 << 20])
        w.close()
        st = store.status("resume")
        assert st.offset == 1 << 20
        assert st.total == len(data)
        w = store.writer("resume", total=len(data), expected=digest)
        try:
            assert w.status().offset == 1 << 20
            w.write(data[1 << 20 :])
            assert w.commit(len(data), digest).size == len(data)
        finally:
            w.close()
        assert read_all(store, digest) == data

    def test_one_writer_per_ref(self, store: Store) -> None:
        w = store.writer("busy")
        try:
            w.write(b"first writer")
            with pytest.raises(Unavailable):
                store.writer("busy")
        finally:
            w.close()
        second = store.writer("busy")
        try:
            assert second.status().offset == len(b"first writer")
        finally:
            second.close()
        store.abort("busy")

    def test_truncate_starts_over(self, store: Store) -> None:
        w = store.writer("truncate")
        try:
            w.write(b"garbage")
            w.truncate(0)
            w.write(b"good")
            assert w.commit(4, digest_of(b"good")).size == 4
        finally:
            w.close()

    def test_list_statuses(self, store: Store) -> None:
        writers = [store.writer(ref) for ref in ("status-a", "status-b")]
        try:
            writers[0].write(b"abc")
            refs = {s.ref for s in store.list_statuses()}
            assert {"status-a", "status-b"} <= refs
            only = store.list_statuses(['ref=="status-a"'])
            assert [(s.ref, s.offset) for s in only] == [("status-a", 3)]
            with pytest.raises(InvalidArgument):
                store.list_statuses(["ref=="])
        finally:
            for w in writers:
                w.close()
            for ref in ("status-a", "status-b"):
                store.abort(ref)

    def test_walk_and_delete(self, store: Store) -> None:
        digests = [put(store, f"walk-{i}".encode()) for i in range(3)]
        listed = {i.digest for i in store.walk()}
        assert set(digests) <= listed
        assert [i.digest for i in store.walk([f"digest=={digests[1]}"])] == [digests[1]]
        store.delete(digests[0])
        with pytest.raises(NotFound):
            store.info(digests[0])
        assert digests[0] not in {i.digest for i in store.walk()}
        with pytest.raises(InvalidArgument):
            list(store.walk(["digest~="]))

    def test_labels(self, store: Store) -> None:
        if not self.supports_labels:
            pytest.skip("this store keeps no labels")
        digest = put(store, b"labelled", labels={"a": "1", "containerd.io/gc.ref.content.0": "x"})
        info = store.info(digest)
        assert info.labels == {"a": "1", "containerd.io/gc.ref.content.0": "x"}
        updated = store.update(type(info)(digest, 0, 0, 0, {"b": "2"}), ["labels.b", "labels.a"])
        assert updated.labels == {"b": "2", "containerd.io/gc.ref.content.0": "x"}
        assert updated.updated_at >= info.updated_at
        assert store.info(digest).labels == updated.labels
        assert [i.digest for i in store.walk(['labels."containerd.io/gc.ref.content.0"==x'])] == [
            digest
        ]
        replaced = store.update(type(info)(digest, 0, 0, 0, {"only": "this", "empty": ""}))
        assert replaced.labels == {"only": "this"}  # an empty value removes a label
        with pytest.raises(InvalidArgument):
            store.update(type(info)(digest, 0, 0, 0, {}), ["size"])
        with pytest.raises(InvalidArgument):
            store.update(type(info)(digest, 0, 0, 0, {"k": "v" * 5000}), ["labels.k"])
        with pytest.raises(NotFound):
            store.update(type(info)(digest_of(b"nope"), 0, 0, 0, {}), ["labels"])

    def test_large_writes(self, store: Store) -> None:
        """One write bigger than a gRPC message (16 MiB) still lands whole."""
        data = os.urandom(20 << 20)
        digest = put(store, data)
        assert store.info(digest).size == len(data)
        assert hashlib.sha256(read_all(store, digest)).hexdigest() == digest.split(":")[1]
        store.delete(digest)
