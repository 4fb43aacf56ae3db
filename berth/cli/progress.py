"""Pull and push as they happen: a live bar per blob on a terminal (name, state, bytes,
speed), one line per change of state when the output goes to a file or a pipe.

The suite does the transfer; its progress messages (``berth.Progress``: event, blob
name such as ``layer-sha256:<hex>``, bytes so far, bytes in all) arrive on a thread of
the client, so the view only ever records them and lets rich redraw.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from berth.cli.core import interactive
from berth.cli.output import size

if TYPE_CHECKING:
    import berth

# Events that end a blob's story, whatever came before.
DONE = frozenset({"downloaded", "exists", "unpacked", "pushed", "mounted", "uploaded"})
# Events that end a blob's transfer (unpacking may follow).
MOVED = frozenset({"downloaded", "exists", "pushed", "mounted", "uploaded"})
KINDS = ("layer", "config", "manifest", "index")


def label(name: str) -> str:
    """``layer-sha256:0c15a06ad806...`` -> ``layer sha256:0c15a06ad806``."""
    kind, _, digest = name.partition("-")
    if kind in KINDS and ":" in digest:
        algorithm, _, hexa = digest.partition(":")
        return f"{kind} {algorithm}:{hexa[:12]}"
    return name


class SpeedColumn(ProgressColumn):
    """Bytes per second: rich's running estimate while moving, the average once done, and
    nothing for a blob that was there already."""

    def render(self, task: Task) -> Text:
        if task.fields.get("existed"):
            return Text("-", style="progress.data.speed")
        speed = task.finished_speed or task.speed
        if speed is None and task.completed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{size(speed)}/s" if speed else "?", style="progress.data.speed")


@dataclass
class Blob:
    label: str
    state: str = ""
    done: int = 0
    total: int = 0
    existed: bool = False  # in the store (or the registry) before: nothing moved
    task: TaskID | None = None


class TransferView:
    """The progress callback of one pull or push, and what it shows.

    Use it as a context manager around the transfer; ``live`` defaults to whether
    stdout is a terminal.
    """

    def __init__(self, ref: str, *, live: bool | None = None, quiet: bool = False) -> None:
        self.ref = ref
        self.live = interactive() if live is None else live
        self.quiet = quiet
        self.started = time.monotonic()
        self.blobs: dict[str, Blob] = {}
        self._lock = threading.Lock()
        self._bars: Progress | None = None
        self._overall: TaskID | None = None

    def __enter__(self) -> TransferView:
        self.started = time.monotonic()
        if self.live and not self.quiet:
            self._bars = Progress(
                TextColumn("{task.fields[label]}"),
                TextColumn("{task.fields[state]:<11}"),
                BarColumn(bar_width=24),
                DownloadColumn(binary_units=True),
                SpeedColumn(),
                console=Console(),
                refresh_per_second=8,
            )
            self._bars.start()
            self._overall = self._bars.add_task(
                "", total=None, label=self.ref, state="resolving", existed=False
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.refresh()
            self._bars.stop()

    # -- the callback ---------------------------------------------------------------

    def __call__(self, p: berth.Progress) -> None:
        try:
            with self._lock:
                self._record(p)
        except Exception as e:  # a display glitch must never fail the transfer
            if self._bars is not None:
                self._bars.console.log(f"progress display: {e}")

    def _record(self, p: berth.Progress) -> None:
        if not p.name or p.name == self.ref:
            self._step(p.event)
            return
        blob = self.blobs.get(p.name)
        if blob is None:
            blob = self.blobs[p.name] = Blob(label(p.name))
        changed = p.event != blob.state
        blob.state = p.event
        blob.existed = blob.existed or p.event == "exists"
        blob.total = p.total or blob.total
        blob.done = blob.total if p.event in DONE else max(p.progress, blob.done)
        if self._bars is not None:
            if blob.task is None:
                blob.task = self._bars.add_task(
                    "", total=blob.total or None, label=blob.label, state=blob.state
                )
            self._bars.update(
                blob.task,
                completed=blob.done,
                total=blob.total or None,
                state=blob.state,
                existed=blob.existed,
            )
            if p.event in MOVED:
                self._bars.stop_task(blob.task)  # its speed is that of the transfer alone
            self._update_overall()
        elif changed and not self.quiet:
            amount = f"{size(blob.done)}/{size(blob.total)}" if blob.total else ""
            click.echo(f"{blob.label}  {blob.state}  {amount}".rstrip())

    def _step(self, event: str) -> None:
        if self._bars is not None and self._overall is not None:
            self._bars.update(self._overall, state=event)
        elif not self.quiet:
            click.echo(f"{self.ref}  {event}")

    def _update_overall(self) -> None:
        assert self._bars is not None
        assert self._overall is not None
        total = sum(b.total for b in self.blobs.values())
        done = sum(b.done for b in self.blobs.values())
        self._bars.update(self._overall, completed=done, total=total or None)

    # -- the end ----------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def transferred(self) -> int:
        """Bytes that moved (blobs already there count for nothing)."""
        return sum(b.total for b in self.blobs.values() if not b.existed)

    def summary(self, what: str) -> str:
        moved = self.transferred()
        rate = moved / self.elapsed if self.elapsed > 0 else 0.0
        return f"{what}: {size(moved)} in {self.elapsed:.1f}s ({size(rate)}/s)"


def echo_done(view: TransferView, line: str, **kwargs: Any) -> None:
    if not view.quiet:
        click.echo(view.summary(line), **kwargs)
