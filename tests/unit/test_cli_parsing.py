"""The berth CLI's parsing of what users type: sizes, mounts, durations, signals, labels;
and how it shows sizes and blob names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from berth.cli.core import Failure, parse_pairs
from berth.cli.leases import parse_duration
from berth.cli.output import size
from berth.cli.progress import label
from berth.cli.specs import parse_mount, parse_size
from berth.cli.tasks import parse_signal


@pytest.mark.parametrize(
    ("text", "expected"),
    [("67108864", 64 << 20), ("64m", 64 << 20), ("64MiB", 64 << 20), ("1.5G", 3 << 29),
     ("512k", 512 << 10), ("1 g", 1 << 30)],
)  # fmt: skip
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "12x", "-1"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(Failure, match="invalid size") as caught:
        parse_size(text)
    assert caught.value.code == 2


def test_mounts_in_ctrs_syntax() -> None:
    assert parse_mount("type=bind,src=/tmp,dst=/host,options=rbind:ro") == {
        "type": "bind", "source": "/tmp", "destination": "/host", "options": ["rbind", "ro"],
    }  # fmt: skip
    assert parse_mount("source=/a,target=/b") == {
        "type": "bind", "source": "/a", "destination": "/b", "options": ["rbind"],
    }  # fmt: skip
    assert parse_mount("type=tmpfs,dst=/scratch")["options"] == []
    with pytest.raises(Failure, match="dst="):
        parse_mount("type=bind,src=/a")
    with pytest.raises(Failure, match="unknown field 'mode'"):
        parse_mount("dst=/a,mode=ro")


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("0") == timedelta(0)
    with pytest.raises(Failure, match="invalid duration"):
        parse_duration("soon")


def test_signals() -> None:
    assert parse_signal("SIGKILL") == parse_signal("KILL") == parse_signal("kill") == 9
    assert parse_signal("15") == 15
    with pytest.raises(Failure, match="unknown signal"):
        parse_signal("SIGNOPE")


def test_label_pairs() -> None:
    assert parse_pairs(["a=b", "c=", "d", "e=f=g"]) == {"a": "b", "c": "", "d": "", "e": "f=g"}
    with pytest.raises(Failure, match="invalid label"):
        parse_pairs(["=x"])


def test_sizes_and_names_as_shown() -> None:
    assert size(0) == "0 B"
    assert size(1023) == "1023 B"
    assert size(1032160) == "1008.0 KiB"
    assert size(5 << 30) == "5.0 GiB"
    assert label(
        "layer-sha256:0c15a06ad806a177dba53bc232b87fae84f79f45981d181e7ba25421b1ab315f"
    ) == ("layer sha256:0c15a06ad806")
    assert label("127.0.0.1:5000/x:latest") == "127.0.0.1:5000/x:latest"
