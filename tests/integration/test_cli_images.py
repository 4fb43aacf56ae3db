"""The berth CLI's images commands against a real suite and registry, as a user runs them:
pull with live progress on a terminal and plain lines through a pipe, push, list as a table
and as JSON, tag, check, remove, import and export, and the errors a user meets first."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.harness import Suite
from tests.integration.cli_support import berth, berth_in_terminal
from tests.testimages import Images, Registry

NS = "cli-images"


def test_pull_on_a_terminal_shows_live_progress_bars(
    suite: Suite, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("multilayer")
    run = berth_in_terminal(suite, "images", "pull", ref, namespace="cli-images-tty")
    assert run.code == 0, run.text
    assert "━" in run.output  # rich's bars
    assert "\x1b[" in run.output  # redrawn in place
    for layer in testimages.layers("multilayer"):
        row = next(
            (line for line in run.text.splitlines() if f"layer {layer.digest[:19]}" in line), ""
        )
        assert row, f"no progress row for {layer.digest} in:\n{run.text}"
    # The last frame shows every layer unpacked, and a summary follows.
    frames, summary = run.text.rsplit(f"pulled {ref} ", 1)
    last = frames.rsplit(f"{ref} complete", 1)[-1]
    assert last.count("unpacked") == len(testimages.layers("multilayer")), run.text
    assert summary.startswith(f"({testimages.digest('multilayer')}): ")
    listed = berth(suite, "images", "ls", "-q", namespace="cli-images-tty").stdout.split()
    assert listed == [ref]


def test_pull_through_a_pipe_prints_one_line_per_change(
    suite: Suite, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("multilayer-zstd")
    out = berth(suite, "images", "pull", ref, namespace=NS).stdout
    assert "\x1b[" not in out and "━" not in out
    lines = out.splitlines()
    assert lines[0] == f"{ref}  resolving"
    for layer in testimages.layers("multilayer-zstd"):
        name = f"layer {layer.digest[:19]}"
        states = [line.split()[2] for line in lines if line.startswith(name + " ")]
        assert states[0] == "waiting" and states[-1] == "unpacked", out
        assert "downloaded" in states
    assert lines[-1].startswith(f"pulled {ref} ({testimages.digest('multilayer-zstd')}): ")
    # Pulled again: everything exists, nothing moves.
    again = berth(suite, "images", "pull", ref, namespace=NS).stdout
    assert " exists " in again and "downloaded" not in again
    assert "0 B in" in again.splitlines()[-1]


def test_quiet_pull_prints_the_name_only(suite: Suite, registry: Registry) -> None:
    ref = registry.ref("busybox")
    assert berth(suite, "images", "pull", "-q", ref, namespace=NS).stdout == f"{ref}\n"


def test_ls_as_a_table_and_as_json(suite: Suite, registry: Registry, testimages: Images) -> None:
    ref = registry.ref("busybox")
    berth(suite, "images", "pull", "-q", ref, namespace=NS)
    table = berth(suite, "images", "ls", namespace=NS).stdout.splitlines()
    assert table[0].split() == ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
    row = next(line for line in table[1:] if line.startswith(ref + " "))
    assert testimages.digest("busybox") in row.split()
    assert "linux/amd64" in row.split()

    listed = json.loads(berth(suite, "images", "ls", "--format", "json", namespace=NS).stdout)
    record = next(r for r in listed if r["name"] == ref)
    assert record["digest"] == testimages.digest("busybox")
    assert record["platforms"] == ["linux/amd64"]
    layers = testimages.layers("busybox")
    assert record["size"] > sum(layer.size for layer in layers)
    # Filters are containerd's.
    only = berth(suite, "images", "ls", "-q", "name~=busybox", namespace=NS).stdout.split()
    assert only == [ref]


def test_tag_label_check_and_rm(suite: Suite, registry: Registry, testimages: Images) -> None:
    ref = registry.ref("busybox")
    berth(suite, "images", "pull", "-q", ref, namespace=NS)
    out = berth(suite, "images", "tag", ref, "berth.test/cli/tagged:1", namespace=NS).stdout
    assert out == "berth.test/cli/tagged:1\n"
    taken = berth(suite, "images", "tag", ref, "berth.test/cli/tagged:1", namespace=NS, check=False)
    assert taken.returncode == 1
    assert taken.stderr.startswith("berth: ") and len(taken.stderr.splitlines()) == 1
    berth(suite, "images", "tag", "--force", ref, "berth.test/cli/tagged:1", namespace=NS)

    labels = berth(suite, "images", "label", "berth.test/cli/tagged:1", "a=b", "c=d", namespace=NS)
    assert labels.stdout == "a=b,c=d\n"
    cleared = berth(suite, "images", "label", "berth.test/cli/tagged:1", "a=", namespace=NS)
    assert cleared.stdout == "c=d\n"

    checked = json.loads(
        berth(suite, "images", "check", "--format", "json", "name==berth.test/cli/tagged:1",
              namespace=NS).stdout
    )  # fmt: skip
    assert checked[0]["complete"] and checked[0]["unpacked"]
    assert checked[0]["present"] == checked[0]["needed"] == 2 + len(testimages.layers("busybox"))
    table = berth(suite, "images", "check", namespace=NS).stdout
    assert "complete (" in table and "true" in table

    assert berth(suite, "images", "rm", "berth.test/cli/tagged:1", namespace=NS).stdout == (
        "berth.test/cli/tagged:1\n"
    )
    assert "berth.test/cli/tagged:1" not in berth(suite, "images", "ls", "-q", namespace=NS).stdout
    gone = berth(suite, "images", "rm", "berth.test/cli/tagged:1", namespace=NS, check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_push_shows_each_blob_then_pull_back(
    suite: Suite, registry: Registry, testimages: Images
) -> None:
    ref = registry.ref("busybox")
    berth(suite, "images", "pull", "-q", ref, namespace=NS)
    remote = registry.ref("cli-pushed")
    out = berth(suite, "images", "push", remote, ref, namespace=NS).stdout
    lines = out.splitlines()
    assert lines[0] == f"{remote}  pushing"
    for layer in testimages.layers("busybox"):
        assert any(line.startswith(f"layer {layer.digest[:19]}") for line in lines), out
    assert lines[-1].startswith(f"pushed {remote}: ")
    pulled = berth(suite, "images", "pull", "-q", remote, namespace="cli-images-pushed")
    assert pulled.stdout == f"{remote}\n"
    listed = json.loads(
        berth(suite, "images", "ls", "--format", "json", namespace="cli-images-pushed").stdout
    )
    assert listed[0]["digest"] == testimages.digest("busybox")


def test_export_then_import(suite: Suite, registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("busybox")
    berth(suite, "images", "pull", "-q", ref, namespace=NS)
    archive = tmp_path / "busybox.tar"
    berth(suite, "images", "export", str(archive), ref, namespace=NS)
    with tarfile.open(archive) as tar:
        assert "index.json" in tar.getnames()
    out = berth(suite, "images", "import", str(archive), namespace="cli-images-import").stdout
    assert out.splitlines()[-1].startswith(f"imported {ref} (sha256:")
    listed = berth(suite, "images", "ls", "-q", namespace="cli-images-import").stdout.split()
    assert listed == [ref]
    checked = berth(suite, "images", "check", "-q", namespace="cli-images-import").stdout
    assert checked.split() == [ref]  # complete and unpacked


# -- what goes wrong ---------------------------------------------------------------------


def one_line_error(result: object) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0  # type: ignore[attr-defined]
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("berth: ")
    assert "Traceback" not in stderr
    return stderr


def test_unknown_image(suite: Suite, registry: Registry) -> None:
    pulled = berth(suite, "images", "pull", registry.ref("no-such-image"), namespace=NS,
                   check=False)  # fmt: skip
    assert "not found" in one_line_error(pulled)
    assert pulled.returncode == 1
    ran = berth(suite, "run", "--rm", "berth.test/nothing:here", "c", "true", namespace=NS,
                check=False)  # fmt: skip
    line = one_line_error(ran)
    assert 'image "berth.test/nothing:here": not found' in line
    assert ran.returncode == 125  # berth's own failure, not the process's
    assert berth(suite, "containers", "ls", "-q", namespace=NS).stdout == ""


@pytest.mark.parametrize("ref", ["not a reference", "host/Repo:tag", "host/repo@sha256:abc"])
def test_bad_reference(suite: Suite, ref: str) -> None:
    result = berth(suite, "images", "pull", ref, namespace=NS, check=False)
    assert "invalid reference" in one_line_error(result)
    assert result.returncode == 2


@pytest.mark.parametrize(
    "args", [("images", "ls"), ("content", "ls"), ("run", "--rm", "busybox", "x", "true")]
)
def test_no_suite_at_the_address(tmp_path: Path, args: tuple[str, ...]) -> None:
    address = str(tmp_path / "nothing.sock")
    result = berth(None, "--address", address, *args, check=False)
    line = one_line_error(result)
    assert line == (
        f"berth: cannot reach berth at {address}: is berthd running? "
        "(--address or $BERTH_ADDRESS say where)\n"
    )
    assert result.returncode == (125 if args[0] == "run" else 3)
