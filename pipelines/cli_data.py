"""Dataset commands: canonicalize, tokenize, shard, validate, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pointillist_data.errors import InputError
from pointillist_data.fileio import atomic_write_text
from pointillist_data.progress import cli_progress

from .app import FLAME_OPT, app, console, read_image
from .command_configs import InspectJob, SplitJob, ValidateJob
from .config_cli import config_command, own_fields
from .job_configs import CanonicalizeJob, ShardJob, TokenizeJob, parse_box
from .tables import print_table


@config_command(app, "canonicalize", CanonicalizeJob)
def canonicalize_cmd(cfg: CanonicalizeJob, flame: Path | None = FLAME_OPT) -> None:
    """Global point cloud at the identity's canonical FLAME pose (zero expression and pose)."""
    from pipelines.stages import canonicalize_stage
    from pointillist_data.flame import resolve_flame_asset

    m = canonicalize_stage(cfg.fit, cfg.out, resolve_flame_asset(flame))
    console.print(f"{m['points']} canonical points -> [bold]{cfg.out}[/]")


@config_command(app, "tokenize", TokenizeJob)
def tokenize_cmd(cfg: TokenizeJob, flame: Path | None = FLAME_OPT) -> None:
    """Quantise to 1024 bins in yzx order with binding tokens (paper section 3.2). The sample
    lists the sequences (the first one's frontal camera gives the crop with --capture)."""

    from pipelines.stages import resolve_sequences, tokenize_stage
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.portrait import frontal_portrait, portrait_crop

    sel = cfg.selection()
    seqs = sel.sequences or []
    if cfg.image is not None:
        crop = portrait_crop(read_image(cfg.image, f"--image {cfg.image}"), cfg.image_size)
    else:
        seqs = resolve_sequences(cfg.capture, cfg.participant, sel)
        crop = frontal_portrait(cfg.capture, cfg.participant, seqs[0], cfg.image_size, sel)
    m = tokenize_stage(cfg.canonical, cfg.subject, crop, cfg.out, resolve_flame_asset(flame).num_faces,
                       parse_box(cfg.box), "clamp" if cfg.clamp else "error", seqs)
    console.print(f"{m['points']} points -> {m['tokens']} tokens -> [bold]{cfg.out}[/]")


@config_command(app, "shard", ShardJob)
def shard_cmd(cfg: ShardJob,
              samples: list[Path] = typer.Argument(..., help="sample.npz files from `tokenize`."),
              flame: Path | None = FLAME_OPT) -> None:
    """Append tokenized samples to a sharded Zarr v3 store (created when absent, or re-created
    after an interrupted creation); resumable after a crash at any point."""
    from pipelines.runner import read_split
    from pipelines.stages import shard_stage
    from pointillist_data.flame import resolve_flame_asset

    split_doc = read_split(cfg.split) if cfg.split else None
    with cli_progress(console) as progress:
        r = shard_stage(samples, cfg.out, resolve_flame_asset(flame).num_faces, parse_box(cfg.box),
                        cfg.tokens_per_shard, cfg.points_per_shard, progress, split=split_doc,
                        flame=str(flame) if flame else None)
    console.print(f"{r['appended']} sample(s) appended ({len(samples) - r['appended']} already present) -> "
                  f"[bold]{cfg.out}[/] ({r['samples_in_store']} in total)")


@config_command(app, "validate", ValidateJob, exclude=("store",), fields_from=own_fields("store"))
def validate_cmd(cfg: ValidateJob, store: str = typer.Argument(..., help="Store path or fsspec URL.")) -> None:
    """Check the manifest and the sha256 of every shard and chunk of every array, then the
    content: the grammar of every sequence and monotone offsets (token stores), or views,
    cameras and FLAME parameters (supervision stores). Lists every problem (array, object,
    samples affected) and exits with 1 when there is any."""
    from pointillist_data.store.supervision import check_supervision_store, is_supervision_store
    from pointillist_data.store.token_store import check_token_store

    store = cfg.store
    supervision = is_supervision_store(store)
    with cli_progress(console) as progress:
        s = (check_supervision_store if supervision else check_token_store)(store, progress)
    for note in s["notes"]:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    if s["problems"]:
        console.print(f"[red]invalid[/]: {store}: {len(s['problems'])} problem(s)", soft_wrap=True)
        for p in s["problems"]:
            console.print(f"  {p}", markup=False, soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    if supervision:
        H, W = s["image_size"]
        console.print(f"[green]valid[/]: supervision store, {s['samples']} identities, {s['views']} views "
                      f"({s['timesteps']} timesteps, {s['cameras']} cameras) at {W}x{H}, {s['shards_checked']} "
                      f"shards and chunks checked (format {s['format_version']})", soft_wrap=True)
        return
    console.print(f"[green]valid[/]: {s['samples']} samples, {s['points']} points, {s['tokens']} tokens, "
                  f"{s['shards_checked']} shards and chunks checked (format {s['format_version']})", soft_wrap=True)


@config_command(app, "inspect", InspectJob, exclude=("store", "no_png", "json"),
                fields_from=own_fields("store", "no_png", "json"))
def inspect_cmd(cfg: InspectJob, store: str = typer.Argument(..., help="Store path or fsspec URL."),
                no_png: bool = typer.Option(False, "--no-png", help="Draw no picture."),
                json: bool = typer.Option(False, "--json", help="Print only JSON on stdout: the summary, the "
                                          "table and the picture's path ('picture', null with --no-png).")) -> None:
    """A summary, the per-sample table (provenance quality figures and counts; --where / --sort)
    and a PNG of the point cloud and histograms (token stores), or of the views, masks and
    crops (supervision stores). Reads only: the store folder is never written (consumers may
    hold a read-only copy); the picture goes to --png or the current folder."""
    from pointillist_data.store.inspect import TABLE_COLUMNS, plot_store, sample_table, summarize_store
    from pointillist_data.store.supervision import is_supervision_store
    from pointillist_data.store.token_store import TokenStore

    store, sample, where, sort, as_json = cfg.store, cfg.sample, cfg.where, cfg.sort, cfg.json
    png, no_png = (Path(cfg.png) if cfg.png else None), cfg.no_png
    if is_supervision_store(store):
        _inspect_supervision(store, None if no_png else _picture_path(store, png), sample, as_json)
        return

    st = TokenStore.open(store)
    summary = summarize_store(st)
    rows = sample_table(st, where, sort)
    picture = None
    target = None if no_png or not len(st) else _picture_path(store, png)
    if target is not None:
        if not -len(st) <= sample < len(st):
            raise InputError("--sample", f"{sample} out of range for a store of {len(st)} sample(s)")
        picture = plot_store(st, target, sample)
    if as_json:
        _print_json({**{k: v for k, v in summary.items() if k != "subjects"}, "table": rows,
                     "picture": None if picture is None else str(picture)})
        return
    else:
        t = Table(title=f"{store}: {summary['samples']} samples, {summary['points_total']} points, "
                        f"vocabulary {summary['vocabulary']}" + (f"; {len(rows)} match {where}" if where else ""))
        for c in TABLE_COLUMNS:
            t.add_column(c.replace("_", " "))
        for r in rows:
            t.add_row(*[escape("-" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]))
                        for c in TABLE_COLUMNS])
        print_table(console, t)
    if picture is not None:
        console.print(f"picture: [bold]{picture}[/]", soft_wrap=True)


def _picture_path(store: str, png: Path | None) -> Path | None:
    """``--png``, else ``<store name>_inspect.png`` in the current folder (never inside the store);
    ``None`` (no picture, said on stderr) when that default folder is not writable, so that a
    read-only working folder does not stop ``inspect --json``."""
    import os

    from .app import err_console

    if png is not None:
        return png
    if not os.access(".", os.W_OK):
        err_console.print("inspect: the current folder is not writable, so no picture (give --png PATH)")
        return None
    stem = Path(store.rstrip("/").rsplit("/", 1)[-1]).stem or "store"
    return Path(f"{stem}_inspect.png")


def _print_json(obj: dict) -> None:
    """Plain ``json.dumps`` on stdout (no rich markup or wrapping); non-finite floats -> null."""
    import math

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    typer.echo(json.dumps(clean(obj), indent=1, allow_nan=False, default=str))


@config_command(app, "split", SplitJob)
def split_cmd(cfg: SplitJob) -> None:
    """Write the train/test split of the participants present (list and seed recorded)."""
    from pointillist_data.manifests import make_split

    nersemble, out, n_test, seed = Path(cfg.nersemble), Path(cfg.out), cfg.n_test, cfg.seed
    ids = sorted(p.name for p in nersemble.iterdir() if p.is_dir() and p.name.isdigit())
    split = make_split(ids, n_test, seed, source=str(nersemble))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(split, indent=1) + "\n")
    console.print(f"{len(split['train'])} train, {len(split['test'])} test -> [bold]{out}[/]")


def _inspect_supervision(store: str, png: Path | None, identity: int, as_json: bool) -> None:
    """``inspect`` of a supervision store; ``png``: the picture to write (``None``: none)."""
    from pointillist_data.store.supervision import SupervisionStore
    from pointillist_data.store.supervision_inspect import plot_supervision, summarize_supervision

    st = SupervisionStore.open(store)
    summary = summarize_supervision(st)
    picture = None
    if len(st) and png is not None:
        if not -len(st) <= identity < len(st):
            raise InputError("--sample", f"{identity} out of range for a store of {len(st)} identities")
        picture = plot_supervision(st, png, identity % len(st))
    if as_json:
        _print_json({**summary, "picture": None if picture is None else str(picture)})
        return
    else:
        H, W = summary["image_size"]
        t = Table(title=f"{store}: {summary['samples']} identities, {summary['views']} views at {W}x{H}")
        for c in ("subject", "timesteps", "cameras", "foreground", "crops"):
            t.add_column(c)
        for s in summary["subjects"]:
            t.add_row(escape(s["subject_id"]), str(s["timesteps"]), str(s["cameras"]), f"{s['foreground']:.1%}",
                      str(s["crops"]))
        print_table(console, t)
    if picture is not None:
        console.print(f"picture: [bold]{picture}[/]", soft_wrap=True)
