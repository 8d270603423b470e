"""Progress reporting for every loop a person waits for, on a terminal or in a log file.

Stages and trainers take a :class:`Progress` (default :data:`NULL_PROGRESS`, silent) and
open one :class:`Task` per loop::

    with progress.task("landmarks 222200037", total=n_frames) as t:
        for frame in frames:
            ...
            t.advance(info=f"{found} faces")

:func:`cli_progress` gives rich progress bars when the console is a terminal, and plain
periodic lines (one when a task starts, one every ``interval`` seconds with the ETA at the
mean rate so far, one when it ends) when output goes to a file or pipe, so cluster logs show
progress too. Loops with a loss put it in the task's ``info`` (fitting, tracking, training).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Progress", "Task", "NULL_PROGRESS", "RichProgress", "LogProgress", "cli_progress", "track", "eta_seconds"]

T = TypeVar("T")


class Task:
    """One loop's progress: ``completed`` of ``total`` steps plus a short ``info`` text."""

    def __init__(self, owner: Progress, description: str, total: float | None) -> None:
        self.owner, self.description, self.total = owner, description, total
        self.completed: float = 0
        self.info = ""
        self.started = time.perf_counter()

    def advance(self, n: float = 1, info: str | None = None) -> None:
        """Add ``n`` completed steps (and replace the info text when given)."""
        self.update(completed=self.completed + n, info=info)

    def update(self, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        """Set the completed steps, the total or the info text."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if info is not None:
            self.info = info
        self.owner._changed(self)

    def close(self) -> None:
        self.owner._closed(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Progress:
    """Base reporter; by itself it reports nothing (see :data:`NULL_PROGRESS`)."""

    def task(self, description: str, total: float | None = None) -> Task:
        """Open a task (use it as a context manager so that it is closed)."""
        t = Task(self, description, total)
        self._opened(t)
        return t

    def log(self, message: str) -> None:
        """A one-off message between progress updates."""

    def _opened(self, task: Task) -> None:
        pass

    def _changed(self, task: Task) -> None:
        pass

    def _closed(self, task: Task) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


NULL_PROGRESS = Progress()


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_seconds(task: Task, now: float | None = None) -> float | None:
    """Seconds left of ``task`` at its mean rate so far (``None`` without a total or before
    the first completed step)."""
    if not task.total or task.completed <= 0 or task.completed >= task.total:
        return None
    el = (time.perf_counter() if now is None else now) - task.started
    return el * (task.total - task.completed) / task.completed


def _fraction(task: Task, eta: bool = False) -> str:
    done = f"{task.completed:g}"
    if task.total:
        left = eta_seconds(task) if eta else None
        return (f"{done}/{task.total:g} ({100 * task.completed / task.total:.0f} %)"
                + (f", ETA {_duration(left)}" if left is not None else ""))
    return done


class LogProgress(Progress):
    """Plain lines for logs: at a task's start, every ``interval`` seconds (with the ETA at
    the mean rate so far when the total is known), and at its end.

    Args:
        write: where lines go (default: ``print`` to stdout, flushed).
        interval: seconds between lines of one task (default ``$POINTILLIST_PROGRESS_INTERVAL``
            or 10).
    """

    def __init__(self, write=None, interval: float | None = None) -> None:
        self.write = write or (lambda s: print(s, flush=True))
        env = os.environ.get("POINTILLIST_PROGRESS_INTERVAL")
        self.interval = interval if interval is not None else float(env) if env else 10.0
        self._last: dict[int, float] = {}

    def _line(self, task: Task, what: str) -> None:
        el = time.perf_counter() - task.started
        info = f"  {task.info}" if task.info else ""
        self.write(f"[{el:7.1f} s] {task.description}: {what}{info}")

    def _opened(self, task: Task) -> None:
        self._last[id(task)] = time.perf_counter()
        self._line(task, "started" + (f", {task.total:g} steps" if task.total else ""))

    def _changed(self, task: Task) -> None:
        now = time.perf_counter()
        if now - self._last.get(id(task), 0.0) >= self.interval:
            self._last[id(task)] = now
            self._line(task, _fraction(task, eta=True))

    def _closed(self, task: Task) -> None:
        if self._last.pop(id(task), None) is not None:
            self._line(task, f"done {_fraction(task)}")

    def log(self, message: str) -> None:
        self.write(message)


class RichProgress(Progress):
    """rich progress bars on a terminal (one row per open task)."""

    def __init__(self, console=None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _RichProgress

        self._p = _RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                console=console, transient=False)
        self._ids: dict[int, Any] = {}
        self._depth = 0

    def __enter__(self) -> RichProgress:
        if self._depth == 0:
            self._p.start()
        self._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._p.stop()

    def _opened(self, task: Task) -> None:
        if self._depth == 0:  # used without ``with``: start on first use
            self.__enter__()
        self._ids[id(task)] = self._p.add_task(task.description, total=task.total, info="")

    def _changed(self, task: Task) -> None:
        tid = self._ids.get(id(task))
        if tid is not None:
            self._p.update(tid, completed=task.completed, total=task.total, info=task.info)

    def _closed(self, task: Task) -> None:
        tid = self._ids.pop(id(task), None)
        if tid is not None:
            self._p.update(tid, completed=task.total if task.total else task.completed, info=task.info)

    def log(self, message: str) -> None:
        self._p.console.print(message)


def cli_progress(console=None, enabled: bool = True, interval: float | None = None) -> Progress:
    """The reporter for a command: rich bars on a terminal, :class:`LogProgress` otherwise,
    :data:`NULL_PROGRESS` when ``enabled`` is False (e.g. DDP ranks other than 0)."""
    if not enabled:
        return NULL_PROGRESS
    is_tty = console.is_terminal if console is not None else sys.stdout.isatty()
    if is_tty:
        return RichProgress(console)
    if console is not None:
        return LogProgress(lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True), interval)
    return LogProgress(interval=interval)


def track(items: Iterable[T], description: str, progress: Progress | None = None, total: float | None = None,
          info=None) -> Iterator[T]:
    """Yield ``items`` while advancing one task per item; ``info(item)`` may give its text."""
    progress = progress or NULL_PROGRESS
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress.task(description, total) as t:
        for it in items:
            yield it
            t.advance(info=info(it) if info else None)
