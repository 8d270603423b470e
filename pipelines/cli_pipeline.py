"""Pipeline commands: run (the main job) and status."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pointillist_data.errors import InputError

from .app import app, console
from .options import CAMERAS_OPT, FRAMES_OPT, SCALE_OPT, SEQUENCES_OPT, selection_of
from .stages import Stage


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
            sequences: str | None = SEQUENCES_OPT, scale: str | None = SCALE_OPT, frames: str = FRAMES_OPT,
            cameras: str | None = CAMERAS_OPT,
            landmarks: str = typer.Option("mediapipe", help="mediapipe, or files:<pattern> with {capture} {pid} {sequence}."),
            store: str | None = typer.Option(None, help="Store path or URL (default: OUT/store.zarr)."),
            flame: str | None = typer.Option(None, "--flame", envvar="POINTILLIST_FLAME_MODEL", help="FLAME model file."),
            config: Path | None = typer.Option(None, "--config", help="JSON with 'tracking' / 'fitting' overrides "
                                               "(any PipelineConfig field)."),
            workers: int | None = typer.Option(None, min=1, help="Local dask workers (default: one per core)."),
            scheduler: str | None = typer.Option(None, help="Address of an existing dask scheduler."),
            force: list[Stage] = typer.Option([], "--force", help="Redo this stage and what depends on it (repeatable)."),
            until: Stage | None = typer.Option(None, help="Stop after this stage."),
            split: str | None = typer.Option(None, "--split", help="Split manifest (`pointillist split`) recorded "
                                             "per sample in the store (default: every sample train)."),
            device: str = typer.Option("auto", "--device", help="auto (CUDA with the CUDA presets of tracking and "
                                       "fitting when there is a GPU, else the CPU budgets), cpu or cuda."),
            ) -> None:
    """Regenerate the dataset: every participant's stages in parallel, then shard, validate and report."""
    from pipelines.monitor import RunMonitor
    from pipelines.report import write_report
    from pipelines.runner import run_pipeline
    from pipelines.stages import PipelineConfig, parse_participants
    from pointillist_data.fileio import build_config, read_json_object
    from pointillist_data.store.token_store import validate_store

    if "://" not in capture and not Path(capture).is_dir():
        raise InputError(capture, "capture folder not found (--capture)")
    ids = parse_participants(participants, capture)
    extra = read_json_object(config) if config else {}
    where = str(config) if config else "options"
    sel = selection_of(scale, frames, cameras, sequences)
    cfg = build_config(PipelineConfig, {"capture": capture, "out": out, "participants": ids, **sel.to_dict(),
                                        "store": store, "flame": flame, "landmarks": landmarks,
                                        "force": [f.value for f in force], **({"split": split} if split else {}),
                                        "device": device, **extra}, where)
    from pointillist_data.fitting.config import FittingConfig
    from pointillist_data.tracking.config import TrackingConfig

    # a typo in the config fails here, once, naming the file, not later in every worker
    build_config(TrackingConfig, cfg.tracking, f"{where}: 'tracking'")
    build_config(FittingConfig, cfg.fitting, f"{where}: 'fitting'")
    from pipelines.stages import stage_plans

    plans = stage_plans(cfg)
    console.print(f"run: {len(ids)} participant(s), {cfg.selection().describe()}, out {out}; tracking on "
                  f"{plans['track']['device']} ({plans['track']['preset']} preset), fitting on {plans['fit']['device']} "
                  f"({plans['fit']['preset']} preset)")
    for line in plans["warnings"]:
        console.print(f"[yellow]warning[/]: {line}", soft_wrap=True)
    with RunMonitor(out, [f"{p:03d}" for p in ids], console) as monitor:
        summary = run_pipeline(cfg, workers, scheduler, until.value if until else None, monitor=monitor)
    validation = None
    if summary["shard"].get("samples_in_store"):
        validation = validate_store(cfg.store)
    report = write_report(out, summary, validation)
    console.print(_summary_table(summary))
    console.print(f"store: [bold]{cfg.store}[/] ({summary['shard']}); report: [bold]{report}[/]; "
                  f"{summary['wall_s']} s")
    if summary.get("supervision", {}).get("samples_in_store"):
        from pointillist_data.store.supervision import validate_supervision_store

        v = validate_supervision_store(cfg.supervision_store)
        console.print(f"supervision: [bold]{cfg.supervision_store}[/] ({v['samples']} identities, {v['views']} views, "
                      f"valid)")
    if summary["failed"]:
        raise typer.Exit(1)


@app.command("status")
def status_cmd(out: str = typer.Argument(..., help="Output folder or URL of a run."),
               store: str | None = typer.Option(None, help="Store of the run (default: the run's, else OUT/store.zarr)."),
               ) -> None:
    """Done, failed, running or interrupted per participant and stage, with reasons, whether
    each participant's sample is in the token store, and what the supervision store holds."""
    from pipelines.monitor import stage_table
    from pipelines.runner import participant_status, record_state, store_status
    from pipelines.workspace import Workspace

    if "://" not in out and not (Path(out) / "work").is_dir():
        raise InputError(out, "not a run folder (no work/ inside)", hint="give the --out folder of `pointillist run`")
    recs = participant_status(out)
    ws = Workspace(out)
    run_cfg = ws.read_json("run_config.json") or {}
    # run_config.json's stores resolve inside this folder first: a copied run reads its own
    origin = "--store" if store else "run_config.json" if run_cfg.get("store") else "default"
    store = store or ws.resolve(run_cfg.get("store"), run_cfg.get("out")) or f"{out.rstrip('/')}/store.zarr"
    st = store_status(store)
    console.print(stage_table(recs, sorted(recs), f"{out}: {len(recs)} participant(s)", set(st["subjects"])))
    if any(record_state(r)[0] == "interrupted" for stages in recs.values() for r in stages.values()):
        console.print("interrupted; re-run the same command to resume (track and fit continue from their last "
                      "checkpoint, the other stages start again)")
    console.print(f"store: {escape(store)}: {escape(_store_line(st, store, 'token store', ('sample', 'samples')))} "
                  f"(path from {origin})", soft_wrap=True)
    sup = ws.resolve(run_cfg.get("supervision_store"), run_cfg.get("out")) or f"{out.rstrip('/')}/supervision.zarr"
    sst = store_status(sup, "supervision")
    missing = sorted(set(st["subjects"]) - set(sst["subjects"])) if sst["state"] == "store" else []
    line = _store_line(sst, sup, "supervision store", ("identity", "identities")) + (
        f"; not in it: {', '.join(missing)}" if missing else "")
    console.print(f"supervision store: {escape(sup)}: {escape(line)}", soft_wrap=True)


def _store_line(st: dict, path: str, what: str, units: tuple[str, str]) -> str:
    """What ``status`` says of a store; ``units``: singular and plural of what it counts."""
    n = st["samples"]
    return {"store": f"{n} {units[n != 1]}", "absent": "absent (nothing written yet)",
            "incomplete": "its creation was interrupted (the next run re-creates it)",
            "foreign": f"not a {what}",
            "unreadable": f"unreadable: {st['detail']} (run `pointillist validate {path}`)"}[st["state"]]
