"""Pipeline commands: run (the main job) and status."""

from __future__ import annotations

import json
from pathlib import Path

import typer
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
    if summary.get("supervision", {}).get("samples_in_store"):
        from pointillist_data.supervision import validate_supervision_store

        v = validate_supervision_store(cfg.supervision_store)
        console.print(f"supervision: [bold]{cfg.supervision_store}[/] ({v['samples']} identities, {v['views']} views, "
                      f"valid)")
    if summary["failed"]:
        raise typer.Exit(1)


@app.command("status")
def status_cmd(out: str = typer.Argument(..., help="Output folder or URL of a run.")) -> None:
    """Done or failed per participant and stage, with reasons."""
    from pipelines.runner import participant_status
    from pipelines.stages import STAGES

    recs = participant_status(out)
    t = Table(title=f"{out}: {len(recs)} participant(s)")
    t.add_column("participant")
    for s in STAGES:
        t.add_column(s)
    for pid in sorted(recs):
        cells = []
        for s in STAGES:
            r = recs[pid].get(s)
            if r is None:
                cells.append("-")
            elif r["status"] == "failed":
                cells.append(f"[red]failed[/]: {r.get('error', '')[:60]}")
            else:
                cells.append({"complete": "[green]done[/]", "running": "[yellow]running[/]"}.get(r["status"], r["status"]))
        t.add_row(pid, *cells)
    console.print(t)
