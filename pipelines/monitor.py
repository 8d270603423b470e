"""Live view of a dataset run: a participant x stage table read from the stage records.

The runner's workers write a record per stage (``running`` when it starts, then ``complete``
or ``failed``), so the driver can show progress of work that runs in other processes or on
other machines without any channel but the workspace itself. On a terminal the table
refreshes in place (rich ``Live``); in a log every change of a stage's state is one line.
Each participant's flagged frames (faces not found, timesteps the tracker left out) are printed
as ``flagged:`` lines when its landmark and tracking stages are complete.
"""

from __future__ import annotations

import datetime
import time

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .runner import record_state
from .stages import STAGES
from .workspace import Workspace

__all__ = ["RunMonitor", "stage_table", "stage_reasons", "cell_text", "flagged_lines"]

_STYLE = {"complete": "green", "failed": "red", "running": "yellow", "interrupted": "red"}


def _elapsed(rec: dict) -> str:
    try:
        t0 = datetime.datetime.fromisoformat(rec["started"])
    except (KeyError, TypeError, ValueError):
        return ""
    end = rec.get("finished")
    t1 = datetime.datetime.fromisoformat(end) if end else datetime.datetime.now(datetime.timezone.utc)
    return f" {int((t1 - t0).total_seconds())} s"


def cell_text(rec: dict | None) -> tuple[str, str]:
    """``(state, text)`` of one stage: ``-``, ``running 12 s``, ``done 40 s``, ``failed: ...``,
    ``interrupted: ...`` (a running record whose process is gone, :func:`record_state`); the
    reason's first line whole (it ends with the file it names)."""
    if rec is None:
        return "", "-"
    state, detail = record_state(rec)
    if state == "complete":
        return state, "done" + _elapsed(rec)
    if state == "running":
        return state, "running" + _elapsed(rec)
    if state in ("failed", "interrupted"):
        reason = (detail or "").strip().splitlines()
        return state, f"{state}: {reason[0] if reason else '?'}"
    return state, state


def stage_table(records: dict[str, dict[str, dict]], participants: list[str], title: str,
                in_store: set[str] | None = None) -> Table:
    """A rich table, one row per participant and one column per stage (and, given the
    subjects of the store, whether each participant's sample is in it). A failed or
    interrupted cell holds the state only: :func:`stage_reasons` gives the reasons whole."""
    t = Table(title=title)
    t.add_column("participant")
    for s in STAGES:
        t.add_column(s)
    if in_store is not None:
        t.add_column("store")
    for pid in participants:
        cells = []
        for s in STAGES:
            state, text = cell_text(records.get(pid, {}).get(s))
            text = state if state in ("failed", "interrupted") else text
            style = _STYLE.get(state, "")
            cells.append(f"[{style}]{escape(text)}[/]" if style else escape(text))
        if in_store is not None:
            cells.append("[green]yes[/]" if pid in in_store else "[red]no[/]")
        t.add_row(pid, *cells)
    return t


def flagged_lines(pid: str, stage: str, rec: dict) -> list[str]:
    """The ``flagged:`` lines of a complete ``landmarks`` or ``track`` record: for landmarks
    a summary (``no face in 25 of 96 camera-frame(s)``) then one line per camera naming its
    video and frames; for tracking one line per flagged timestep or camera. ``[]`` when
    nothing was flagged."""
    m = rec.get("metrics") or {}
    out = []
    if stage == "landmarks":
        if m.get("no_face_frames"):
            out.append(f"flagged: participant {pid}: landmarks: no face in {m['no_face_frames']} of "
                       f"{m.get('camera_frames', '?')} camera-frame(s)")
        out += [f"flagged: participant {pid}: landmarks: {line}" for line in m.get("no_face") or []]
    elif stage == "track":
        for f in m.get("flagged") or []:
            what = ", ".join(f"{k} {v}" for k, v in f.items() if k != "reason")
            out.append(f"flagged: participant {pid}: tracking: {f.get('reason', '?')}" + (f" ({what})" if what else ""))
    return out


def stage_reasons(records: dict[str, dict[str, dict]], participants: list[str]) -> list[str]:
    """``<participant> <stage>: failed: <reason>`` (or ``interrupted: ...``), one line per
    failed or interrupted stage, never shortened."""
    out = []
    for pid in participants:
        for s in STAGES:
            state, text = cell_text(records.get(pid, {}).get(s))
            if state in ("failed", "interrupted"):
                out.append(f"{pid} {s}: {text}")
    return out


class RunMonitor:
    """Call it periodically during a run (``run_pipeline(monitor=...)``).

    Args:
        out: the run's output folder or URL (where the records are).
        participants: ids (``"017"``) to show.
        console: rich console; a terminal gets a live table, anything else log lines.
        interval: seconds between reads of the records.
    """

    def __init__(self, out: str, participants: list[str], console, interval: float = 1.0) -> None:
        self.ws, self.participants, self.console, self.interval = Workspace(out), participants, console, interval
        self.live: Live | None = None
        self._seen: dict[tuple[str, str], str] = {}
        self._flagged_shown: set[tuple[str, str]] = set()
        self._last = 0.0
        self._t0 = time.perf_counter()

    def __enter__(self) -> RunMonitor:
        if self.console.is_terminal:
            self.live = Live(self._table({}), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._last = 0.0  # the last look is never skipped: the final states and flagged frames
        self()
        if self.live is not None:
            self.live.__exit__(*exc)

    def _table(self, records: dict) -> Table:
        el = time.perf_counter() - self._t0
        return stage_table(records, self.participants, f"run: {len(self.participants)} participant(s), {el:.0f} s")

    def __call__(self) -> None:
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        records = self.ws.records()
        if self.live is not None:
            self._print_flagged(records)
            self.live.update(self._table(records))
            return
        for pid in self.participants:
            for s in STAGES:
                state, text = cell_text(records.get(pid, {}).get(s))
                if state and self._seen.get((pid, s)) != state:
                    self._seen[(pid, s)] = state
                    self.console.print(f"[{now - self._t0:7.1f} s] participant {pid}: {s} {text}",
                                       markup=False, highlight=False)
        self._print_flagged(records)

    def _print_flagged(self, records: dict) -> None:
        """Each participant's ``flagged:`` lines, once, when its landmark / tracking stage is complete."""
        for pid in self.participants:
            for stage in ("landmarks", "track"):
                rec = records.get(pid, {}).get(stage)
                if rec and rec.get("status") == "complete" and (pid, stage) not in self._flagged_shown:
                    self._flagged_shown.add((pid, stage))
                    for line in flagged_lines(pid, stage, rec):
                        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
