"""Pipeline commands: run (the main job) and status."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from .app import app, console


def _summary_table(summary: dict) -> Table:
    t = Table(title="participants")
    for c in ("participant", "status", "stages", "error"):
        t.add_column(c)
    for s in summary["summaries"]:
        stages = ", ".join(f"{k}: {v}" for k, v in s.get("stages", {}).items())
        colour = "green" if s["status"] == "complete" else "red"
        t.add_row(s["participant"], f"[{colour}]{s['status']}[/]", stages, s.get("error") or "")
    return t


@app.command("run")
def run_cmd(capture: str = typer.Option(..., "--capture", help="NeRSemble folder."),
            out: str = typer.Option(..., "--out", help="Output folder or fsspec URL (work/, report, store)."),
            participants: str = typer.Option("all", help="Comma-separated ids, or 'all' (every folder in --capture)."),
            sequence: str = typer.Option("EXP-1-head", help="Sequence to track and fit."),
            landmarks: str = typer.Option("mediapipe", help="mediapipe, or files:<pattern> with {capture} {pid} {sequence}."),
            store: str | None = typer.Option(None, help="Store path or URL (default: OUT/store.zarr)."),
            flame: str | None = typer.Option(None, "--flame", envvar="POINTILLIST_FLAME_MODEL", help="FLAME model file."),
            config: Path | None = typer.Option(None, "--config", help="JSON with 'tracking' / 'fitting' overrides."),
            workers: int | None = typer.Option(None, help="Local dask workers (default: one per core)."),
            scheduler: str | None = typer.Option(None, help="Address of an existing dask scheduler."),
            force: list[str] = typer.Option([], "--force", help="Redo this stage and what depends on it (repeatable)."),
            until: str | None = typer.Option(None, help="Stop after this stage (landmarks, track, fit, ...)."),
            ) -> None:
    """Regenerate the dataset: every participant's stages in parallel, then shard, validate and report."""
    from pipelines.report import write_report
    from pipelines.runner import run_pipeline
    from pipelines.stages import PipelineConfig
    from pointillist_data.store import validate_store

    if participants == "all":
        ids = sorted(int(p.name) for p in Path(capture).iterdir() if p.is_dir() and p.name.isdigit())
    else:
        ids = [int(x) for x in participants.split(",") if x]
    extra = json.loads(config.read_text()) if config else {}
    cfg = PipelineConfig(capture=capture, out=out, participants=ids, sequence=sequence, store=store, flame=flame,
                         landmarks=landmarks, force=list(force), **extra)
    with console.status(f"processing {len(ids)} participant(s)"):
        summary = run_pipeline(cfg, workers, scheduler, until,
                               progress=lambda s: console.print(f"participant {s['participant']}: {s['status']}"))
    validation = None
    if summary["shard"].get("samples_in_store"):
        validation = validate_store(cfg.store)
    report = write_report(out, summary, validation)
    console.print(_summary_table(summary))
    console.print(f"store: [bold]{cfg.store}[/] ({summary['shard']}); report: [bold]{report}[/]; "
                  f"{summary['wall_s']} s")
    if summary["failed"]:
        raise typer.Exit(1)


@app.command("status")
def status_cmd(out: str = typer.Argument(..., help="Output folder or URL of a run."),
               store: str | None = typer.Option(None, help="Store of the run (default: the run's, else OUT/store.zarr)."),
               ) -> None:
    """Done, failed, running or interrupted per participant and stage, with reasons, and
    whether each participant's sample is in the store."""
    from pipelines.runner import participant_status, record_state, store_status
    from pipelines.stages import STAGES
    from pipelines.workspace import Workspace

    recs = participant_status(out)
    run_cfg = Workspace(out).read_json("run_config.json") or {}
    store = store or run_cfg.get("store") or f"{out.rstrip('/')}/store.zarr"
    st = store_status(store)
    in_store = set(st["subjects"])
    t = Table(title=f"{out}: {len(recs)} participant(s)")
    t.add_column("participant")
    for s in STAGES:
        t.add_column(s)
    t.add_column("store")
    colours = {"complete": "[green]done[/]", "running": "[yellow]running[/]", "interrupted": "[red]interrupted[/]",
               "skipped": "skipped"}
    for pid in sorted(recs):
        cells = []
        for s in STAGES:
            r = recs[pid].get(s)
            if r is None:
                cells.append("-")
                continue
            state, detail = record_state(r)
            text = colours.get(state, "[red]failed[/]" if state == "failed" else state)
            cells.append(f"{text}: {escape(detail[:60])}" if detail and state in ("failed", "interrupted") else text)
        cells.append("[green]yes[/]" if pid in in_store else "[red]no[/]")
        t.add_row(pid, *cells)
    console.print(t)
    if any(record_state(r)[0] == "interrupted" for stages in recs.values() for r in stages.values()):
        console.print("interrupted stages start again from their beginning when the run is started again")
    what = {"store": f"{st['samples']} sample(s)", "absent": "absent (nothing sharded yet)",
            "incomplete": "its creation was interrupted (the next run re-creates it)",
            "foreign": "not a token store",
            "unreadable": f"unreadable: {st['detail']} (run `pointillist validate {store}`)"}[st["state"]]
    console.print(f"store: {escape(store)}: {escape(what)}", soft_wrap=True)
