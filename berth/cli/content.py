"""``berth content``: the blobs under images, by digest, and ingests in progress."""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Any

import click

from berth.cli.core import (
    EXIT_USAGE,
    AliasGroup,
    State,
    each,
    fail,
    pairs_text,
    parse_pairs,
    pass_state,
)
from berth.cli.output import (
    age,
    field,
    format_option,
    from_nanoseconds,
    listing,
    quiet_option,
    size,
    timestamp,
)

group = AliasGroup("content", help="Manage content: blobs by digest, and active ingests.")

CHUNK = 1 << 20


def blob_record(info: Any) -> dict[str, Any]:
    return {
        "digest": info.digest,
        "size": info.size,
        "labels": dict(info.labels),
        "created_at": timestamp(from_nanoseconds(info.created_at)),
        "updated_at": timestamp(from_nanoseconds(info.updated_at)),
    }


@group.command_with("ls", "list")
@click.argument("filters", nargs=-1)
@format_option
@quiet_option("digests")
@pass_state
def ls(state: State, filters: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """List blobs (FILTERS as containerd's: labels."containerd.io/uncompressed")."""
    records = [blob_record(i) for i in state.client.content_store().walk(filters)]
    listing(
        records,
        [
            ("DIGEST", field("digest")),
            ("SIZE", lambda r: size(r["size"])),
            ("AGE", lambda r: age(r["created_at"])),
            ("LABELS", lambda r: pairs_text(r["labels"])),
        ],
        fmt,
        quiet=quiet,
        key="digest",
    )


@group.command_with("get")
@click.argument("digests", nargs=-1, required=True)
@pass_state
def get(state: State, digests: tuple[str, ...]) -> None:
    """Write blobs to stdout, one after the other."""
    store = state.client.content_store()
    out = sys.stdout.buffer
    for digest in digests:
        for chunk in store.read(digest):
            out.write(chunk)
    out.flush()


@group.command_with("ingest")
@click.argument("ref")
@click.option("--expected-size", type=int, default=0, help="Fail unless this many bytes come.")
@click.option("--expected-digest", default="", help="Fail unless the bytes have this digest.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Label of the blob.")
@pass_state
def ingest(
    state: State, ref: str, expected_size: int, expected_digest: str, label: tuple[str, ...]
) -> None:
    """Store stdin as a blob, written under the ingest REF; print its digest."""
    store = state.client.content_store()
    writer = store.writer(ref, expected_size, expected_digest)
    try:
        if writer.status().offset:  # a failed ingest of the same ref: stdin cannot resume
            writer.truncate(0)
        digest = hashlib.sha256()
        written = 0
        while chunk := sys.stdin.buffer.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
            written += len(chunk)
        actual = "sha256:" + digest.hexdigest()
        info = writer.commit(
            expected_size or written, expected_digest or actual, parse_pairs(label)
        )
    finally:
        writer.close()
    click.echo(info.digest)


@group.command_with("rm", "delete", "del", "remove")
@click.argument("digests", nargs=-1, required=True)
@pass_state
def rm(state: State, digests: tuple[str, ...]) -> None:
    """Delete blobs for good, whatever uses them; print each one deleted."""
    store = state.client.content_store()

    def delete(digest: str) -> None:
        store.delete(digest)
        click.echo(digest)

    each(digests, delete)


@group.command_with("label")
@click.argument("digest")
@click.argument("labels", nargs=-1, metavar="[KEY=VALUE]...")
@pass_state
def label(state: State, digest: str, labels: tuple[str, ...]) -> None:
    """Set labels of a blob (KEY= removes one); print its labels."""
    import dataclasses

    store = state.client.content_store()
    info = store.info(digest)
    if labels:
        wanted = parse_pairs(labels)
        info = store.update(
            dataclasses.replace(info, labels={k: v for k, v in wanted.items() if v}),
            [f"labels.{k}" for k in wanted],
        )
    click.echo(pairs_text(info.labels))


@group.command_with("active")
@click.argument("pattern", default="")
@format_option
@pass_state
def active(state: State, pattern: str, fmt: str) -> None:
    """Ingests in progress (refs matching the regular expression PATTERN)."""
    try:
        wanted = re.compile(pattern)
    except re.error as e:
        fail(f"invalid pattern {pattern!r}: {e}", EXIT_USAGE)
    records = [
        {
            "ref": s.ref,
            "offset": s.offset,
            "total": s.total,
            "expected": s.expected,
            "started_at": timestamp(from_nanoseconds(s.started_at)),
            "updated_at": timestamp(from_nanoseconds(s.updated_at)),
        }
        for s in state.client.content_store().list_statuses()
        if wanted.search(s.ref)
    ]
    listing(
        records,
        [
            ("REF", field("ref")),
            ("SIZE", lambda r: f"{size(r['offset'])}/{size(r['total'])}"),
            ("AGE", lambda r: age(r["started_at"])),
        ],
        fmt,
    )


@group.command_with("fetch")
@click.argument("ref")
@click.option("--platform", default="", help="Fetch for this platform (default: this host's).")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.option("--user", "-u", default="", metavar="USER[:PASSWORD]", help="Credentials.")
@pass_state
def fetch(state: State, ref: str, platform: str, quiet: bool, user: str) -> None:
    """Fetch an image's content without unpacking it (images pull --no-unpack)."""
    from berth.cli.images import pull_image

    pull_image(state.client, ref, platform=platform, unpack=False, user=user, quiet=quiet)
