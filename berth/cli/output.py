"""Listings as aligned columns for people (``--format table``, the default) or JSON for
scripts (``--format json``: one array of objects, the same on every run), and ``-q`` for
the bare names ctr's ``-q`` prints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from berth.cli.core import interactive

Record = Mapping[str, Any]
Column = tuple[str, Callable[[Record], str]]


def format_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Columns for people, or a JSON array for scripts.",
    )(f)


def quiet_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--quiet", "-q", is_flag=True, help=f"Print only the {what}.")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Columns two spaces apart, headers in bold on a terminal (ctr's tabwriter layout)."""
    rows = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(w) for cell, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    header = line(headers)
    click.echo(click.style(header, bold=True) if interactive() else header)
    for row in rows:
        click.echo(line(row))


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def listing(
    records: Sequence[Record],
    columns: Sequence[Column],
    fmt: str,
    *,
    quiet: bool = False,
    key: str = "id",
) -> None:
    """Print ``records`` as the user asked: JSON (every field), names (``-q``) or columns."""
    if fmt == "json":
        emit_json(list(records))
    elif quiet:
        for record in records:
            click.echo(record[key])
    else:
        table([h for h, _ in columns], ([cell(r) for _, cell in columns] for r in records))


def field(name: str, empty: str = "-") -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        value = record.get(name)
        return empty if value in (None, "", [], {}) else str(value)

    return cell


def size(n: int | float | None) -> str:
    """Bytes in binary units, as ctr's ``progress.Bytes`` (``1008.0 KiB``)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop returns


def timestamp(when: datetime | None) -> str | None:
    """RFC 3339 in UTC for JSON and tables; None when unset."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_nanoseconds(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, UTC) if ns else None


def age(when: datetime | str | None) -> str:
    """``3 minutes``: how long ago (ctr's content and lease listings)."""
    if when is None:
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    seconds = max(0, int((datetime.now(UTC) - when).total_seconds()))
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


_INT64 = frozenset(
    {3, 4, 6, 16, 18}
)  # FieldDescriptor.TYPE_INT64, UINT64, FIXED64, SFIXED64, SINT64
_AS_IS = frozenset({"google.protobuf.Any", "google.protobuf.Timestamp", "google.protobuf.Duration"})


def proto_json(message: Any) -> Any:
    """A protobuf message as JSON values, with protobuf's field names; unlike protobuf's
    own JSON, 64-bit integers stay numbers (byte counts are what scripts add up)."""
    from google.protobuf import json_format

    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return _numbers(message.DESCRIPTOR, data)


def _numbers(descriptor: Any, data: Any) -> Any:
    if descriptor.full_name in _AS_IS or not isinstance(data, dict):
        return data
    for fd in descriptor.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        repeated = isinstance(value, list)
        items = value if repeated else [value]
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                continue
            items = [_numbers(fd.message_type, item) for item in items]
        elif fd.type in _INT64:
            items = [int(item) for item in items]
        data[fd.name] = items if repeated else items[0]
    return data
