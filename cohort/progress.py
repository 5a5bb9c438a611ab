"""Progress a person can see, in a terminal and in a log file.

In a terminal :class:`StepProgress` draws a rich progress bar. When stderr is not a
terminal (``nohup``, CI, a log file), rich would print nothing until the end, so it
prints one plain line instead at the start, at least every ``interval_s`` seconds
(default 30, ``TUMORGEN_PROGRESS_INTERVAL`` overrides) and at the end::

    [autoencoder] 120/600 (20%) loss 0.0412 | 0.61 s/step | elapsed 1m13s | left 4m53s

Usage::

    with StepProgress("autoencoder", total=600, completed=start, unit="step") as bar:
        ...
        bar.update(step, info=f"loss {loss:.4f}")
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def _interval() -> float:
    try:
        return float(os.environ.get("TUMORGEN_PROGRESS_INTERVAL", "30"))
    except ValueError:
        return 30.0


def fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class StepProgress:
    """A progress bar (terminal) or a line every ``interval_s`` seconds (anything else)."""

    def __init__(self, description: str, total: int | None, completed: int = 0, enabled: bool = True,
                 unit: str = "step", interval_s: float | None = None, stream: TextIO | None = None,
                 transient: bool = False):
        self.description, self.total, self.completed = description, total, completed
        self.enabled, self.unit = enabled, unit
        self.interval = _interval() if interval_s is None else interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.transient = transient
        self.info = ""
        self._start_completed = completed
        self._t0 = self._last = 0.0
        self._rich = None
        self._task = None

    # -- context ---------------------------------------------------------------------------
    def __enter__(self) -> StepProgress:
        self._t0 = self._last = time.perf_counter()
        if not self.enabled:
            return self
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(TextColumn(f"[bold]{self.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                  console=Console(file=self.stream), transient=self.transient)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, completed=self.completed, info="")
        else:
            self._line(start=True)
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.__exit__(*exc)
        elif self.completed != self._start_completed or exc[0] is not None:
            self._line(end=True)

    # -- updates ---------------------------------------------------------------------------
    def update(self, completed: int | None = None, info: str | None = None, advance: int = 0) -> None:
        if completed is not None:
            self.completed = completed
        self.completed += advance
        if info is not None:
            self.info = info
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed, info=self.info)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._line()

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.update(advance=n, info=info)

    def _line(self, start: bool = False, end: bool = False) -> None:
        now = time.perf_counter()
        self._last = now
        done = self.completed - self._start_completed
        elapsed = now - self._t0
        parts = [f"[{self.description}]"]
        if self.total:
            parts.append(f"{self.completed}/{self.total} ({100 * self.completed / self.total:.0f}%)")
        else:
            parts.append(f"{self.completed} {self.unit}s")
        if self.info:
            parts.append(self.info)
        tail = []
        if done > 0:
            per = elapsed / done
            tail.append(f"{per:.2f} s/{self.unit}" if per < 100 else f"{fmt_seconds(per)}/{self.unit}")
        if not start:
            tail.append(f"elapsed {fmt_seconds(elapsed)}")
        if done > 0 and self.total and not end:
            tail.append(f"left {fmt_seconds(elapsed / done * max(self.total - self.completed, 0))}")
        if start:
            tail.append("started")
        if end:
            tail.append("finished" if not self.total or self.completed >= self.total else "stopped")
        line = " ".join(parts) + (" | " + " | ".join(tail) if tail else "")
        print(line, file=self.stream, flush=True)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
          unit: str = "case", transient: bool = True) -> Iterator[T]:
    """Iterate with :class:`StepProgress` (``rich.progress.track`` that also logs)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with StepProgress(description, total, enabled=enabled, unit=unit, transient=transient) as bar:
        for item in items:
            yield item
            bar.advance()
