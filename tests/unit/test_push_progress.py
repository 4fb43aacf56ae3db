"""Mid-blob upload progress: counts what the uploader has taken, passes chunks through."""

from services.images.push import _reporting


def test_reporting_passes_chunks_through_and_counts_what_went_out() -> None:
    reports: list[int] = []
    chunks = [b"a" * 3, b"b" * 5, b"c" * 7]
    out = list(_reporting(iter(chunks), reports.append, every=0))
    assert out == chunks
    assert reports == [3, 8, 15]


def test_reporting_is_rate_limited() -> None:
    reports: list[int] = []
    out = list(_reporting(iter([b"x"] * 1000), reports.append, every=3600))
    assert len(out) == 1000
    assert reports == []
