"""Pipeline commands: run (the main job) and status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from pointillist_data.errors import InputError

from .app import app, console
from .command_configs import StatusJob
from .config_cli import config_command, own_fields
from .stages import PipelineConfig, Stage
from .tables import print_table
from .workspace import subject_key


def _summary_table(summary: dict) -> Table:
    t = Table(title="participants")
    for c in ("participant", "status", "stages", "error"):
        t.add_column(c)
    for s in summary["summaries"]:
        stages = ", ".join(f"{k}: {v}" for k, v in s.get("stages", {}).items())
        colour = "green" if s["status"] == "complete" else "red"
        t.add_row(s["participant"], f"[{colour}]{s['status']}[/]", escape(stages), escape(s.get("error") or ""))
    return t


def _run_fields(flame: Path | None = None, force: list[Stage] | None = None, **_: Any) -> dict:
    """The PipelineConfig fields given as ``run``'s own options (``--flame`` has an environment
    variable, ``--force`` is repeatable)."""
    return {"flame": str(flame) if flame else None, "force": [f.value for f in force] if force else None}


@config_command(app, "run", PipelineConfig, exclude=("flame", "force"), fields_from=_run_fields,
                panel="PipelineConfig (also in --config FILE)")
def run_cmd(cfg: PipelineConfig,
            flame: Path | None = typer.Option(None, "--flame", envvar="POINTILLIST_FLAME_MODEL",
                                              help="FLAME model file (default: the demo head)."),
            force: list[Stage] = typer.Option([], "--force", help="Redo this stage and what depends on it "
                                              "(repeatable)."),
            workers: int | None = typer.Option(None, min=1, help="Local dask workers (default: one per core)."),
            scheduler: str | None = typer.Option(None, help="Address of an existing dask scheduler."),
            until: Stage | None = typer.Option(None, help="Stop after this stage."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (resolved selection, input and "
                                         "output bytes, CPU-hours from the cost model, stages to skip, problems) "
                                         "and stop: nothing is written, no worker starts."),
            ) -> None:
    """Regenerate the dataset: every participant's stages in parallel, then shard, validate and
    report. Every PipelineConfig field is a flag (`--tracking.frame-iters`, `--fitting.iterations`
    over the --device preset); precedence: defaults < --config FILE < explicit flags."""
    if dry_run:
        from pipelines.plan import dry_run as show_plan

        if show_plan(cfg, console, workers, until.value if until else None):
            raise typer.Exit(2)  # the problems the run would stop on, listed
        return
    _run(cfg, workers, scheduler, until.value if until else None)


def _run(cfg: PipelineConfig, workers: int | None, scheduler: str | None, until: str | None) -> None:
    """The body of ``run`` on a resolved config (own options that change no output stay arguments)."""
    from pipelines.monitor import RunMonitor
    from pipelines.report import write_report
    from pipelines.runner import run_pipeline
    from pipelines.stages import stage_plans
    from pointillist_data.store.token_store import validate_store

    if cfg.capture is not None and "://" not in cfg.capture and not Path(cfg.capture).is_dir():
        raise InputError(cfg.capture, "capture folder not found (--capture)")
    out = cfg.out
    plans = stage_plans(cfg)
    console.print(f"run: {len(cfg.participants)} participant(s), {cfg.selection().describe()}, out {out}; tracking on "
                  f"{plans['track']['device']} ({plans['track']['preset']} preset), fitting on {plans['fit']['device']} "
                  f"({plans['fit']['preset']} preset)")
    for line in plans["warnings"]:
        console.print(f"[yellow]warning[/]: {line}", soft_wrap=True)
    with RunMonitor(out, [subject_key(p) for p in cfg.participants], console) as monitor:
        summary = run_pipeline(cfg, workers, scheduler, until, monitor=monitor)
    validation = None
    if summary["shard"].get("samples_in_store"):
        validation = validate_store(cfg.store)
    report = write_report(out, summary, validation)
    print_table(console, _summary_table(summary))
    console.print(f"store: [bold]{cfg.store}[/] ({summary['shard']}); report: [bold]{report}[/]; "
                  f"{summary['wall_s']} s")
    if summary.get("supervision", {}).get("samples_in_store"):
        from pointillist_data.store.supervision import validate_supervision_store

        v = validate_supervision_store(cfg.supervision_store)
        console.print(f"supervision: [bold]{cfg.supervision_store}[/] ({v['samples']} identities, {v['views']} views, "
                      f"valid)")
    if summary["failed"]:
        raise typer.Exit(1)


@config_command(app, "status", StatusJob, exclude=("out",), fields_from=own_fields("out"))
def status_cmd(cfg: StatusJob, out: str = typer.Argument(..., help="Output folder or URL of a run.")) -> None:
    """Done, failed, running or interrupted per participant and stage, with reasons, whether
    each participant's sample is in the token store, and what the supervision store holds."""
    from pipelines.monitor import stage_reasons, stage_table
    from pipelines.runner import participant_status, record_state, store_status
    from pipelines.workspace import Workspace

    out, store = cfg.out, cfg.store
    if "://" not in out and not (Path(out) / "work").is_dir():
        raise InputError(out, "not a run folder (no work/ inside)", hint="give the --out folder of `pointillist run`")
    recs = participant_status(out)
    ws = Workspace(out)
    run_cfg = ws.read_json("run_config.json") or {}
    # run_config.json's stores resolve inside this folder first: a copied run reads its own
    origin = "--store" if store else "run_config.json" if run_cfg.get("store") else "default"
    store = store or ws.resolve(run_cfg.get("store"), run_cfg.get("out")) or f"{out.rstrip('/')}/store.zarr"
    st = store_status(store)
    print_table(console, stage_table(recs, sorted(recs), f"{out}: {len(recs)} participant(s)", set(st["subjects"])))
    for line in stage_reasons(recs, sorted(recs)):  # whole, wrapped: the file a reason names comes last
        console.print(line, markup=False, highlight=False)
    if any(record_state(r)[0] == "interrupted" for stages in recs.values() for r in stages.values()):
        console.print("interrupted; re-run the same command to resume (track and fit continue from their last "
                      "checkpoint, the other stages start again)")
    console.print(f"store: {escape(store)}: {escape(_store_line(st, store, 'token store', ('sample', 'samples')))} "
                  f"(path from {origin})", soft_wrap=True)  # a long path stays whole: copyable
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
