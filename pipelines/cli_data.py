"""Dataset commands: canonicalize, tokenize, shard, validate, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from pointillist_data.errors import InputError
from pointillist_data.fileio import atomic_write_text
from pointillist_data.progress import cli_progress

from .app import FLAME_OPT, app, console, read_image
from .options import CAMERAS_OPT, FRAMES_OPT, SCALE_OPT, SEQUENCES_OPT, selection_of


def _parse_box(box: str):
    """``default`` or ``x0,y0,z0,x1,y1,z1`` (metres) -> :class:`QuantBox`."""
    from pointillist_data.tokens import DEFAULT_BOX, QuantBox

    if box == "default":
        return DEFAULT_BOX
    try:
        v = [float(x) for x in box.split(",")]
    except ValueError:
        v = []
    if len(v) != 6:
        raise InputError("--box", f"needs 'default' or 6 numbers x0,y0,z0,x1,y1,z1 (metres), got '{box}'")
    try:
        return QuantBox(tuple(v[:3]), tuple(v[3:]))
    except ValueError as e:
        raise InputError("--box", str(e)) from None


@app.command("canonicalize")
def canonicalize_cmd(fit: Path = typer.Option(..., "--fit", help="Fitting output folder (point_cloud.ply + flame_param.npz)."),
                     out: Path = typer.Option(..., "--out", help="canonical.npz to write."),
                     flame: Path | None = FLAME_OPT) -> None:
    """Global point cloud at the identity's canonical FLAME pose (zero expression and pose)."""
    from pipelines.stages import canonicalize_stage
    from pointillist_data.flame import resolve_flame_asset

    m = canonicalize_stage(fit, out, resolve_flame_asset(flame))
    console.print(f"{m['points']} canonical points -> [bold]{out}[/]")


@app.command("tokenize")
def tokenize_cmd(canonical: Path = typer.Option(..., "--canonical", help="canonical.npz from `canonicalize`."),
                 subject: str = typer.Option(..., "--subject", help="Subject id (participant id)."),
                 out: Path = typer.Option(..., "--out", help="sample.npz to write."),
                 image: Path | None = typer.Option(None, "--image", help="Portrait (PNG/JPG) for the conditioning crop."),
                 capture: Path | None = typer.Option(None, "--capture", help="Or: NeRSemble folder; the crop is frame 0 "
                                                     "of the most frontal camera, as `run` takes it."),
                 participant: int | None = typer.Option(None, "--participant", help="Participant id (with --capture)."),
                 sequences: str | None = SEQUENCES_OPT, scale: str | None = SCALE_OPT, frames: str = FRAMES_OPT,
                 cameras: str | None = CAMERAS_OPT,
                 box: str = typer.Option("default", help="Quantisation box: 'default' or 'x0,y0,z0,x1,y1,z1' (m)."),
                 clamp: bool = typer.Option(False, help="Clamp points outside the box (with a counted warning)."),
                 image_size: int = typer.Option(128, min=8, help="Side of the square conditioning crop."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Quantise to 1024 bins in yzx order with binding tokens (paper section 3.2). The sample
    lists the sequences (the first one's frontal camera gives the crop with --capture)."""

    from pipelines.stages import resolve_sequences, tokenize_stage
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.portrait import frontal_portrait, portrait_crop

    qb = _parse_box(box)
    sel = selection_of(scale, frames, cameras, sequences)
    seqs = sel.sequences or []
    if image is not None:
        img = read_image(image)
        crop = portrait_crop(img, image_size)
    elif capture is not None and participant is not None:
        seqs = resolve_sequences(capture, participant, sel)
        crop = frontal_portrait(capture, participant, seqs[0], image_size, sel)
    else:
        raise InputError("--image", "give a portrait (--image) or --capture and --participant for the frontal crop")
    m = tokenize_stage(canonical, subject, crop, out, resolve_flame_asset(flame).num_faces, qb,
                       "clamp" if clamp else "error", seqs)
    console.print(f"{m['points']} points -> {m['tokens']} tokens -> [bold]{out}[/]")


@app.command("shard")
def shard_cmd(samples: list[Path] = typer.Argument(..., help="sample.npz files from `tokenize`."),
              out: str = typer.Option(..., "--out", help="Store path or fsspec URL (s3://...)."),
              box: str = typer.Option("default", help="Quantisation box of a new store (as for tokenize)."),
              tokens_per_shard: int = typer.Option(1 << 21, min=4096, help="Tokens per shard of a new store."),
              points_per_shard: int = typer.Option(1 << 19, min=1024, help="Rows per shard of the per-point arrays."),
              split: str | None = typer.Option(None, "--split", help="Split manifest (`pointillist split`) giving "
                                               "each sample's split (default: train)."),
              flame: Path | None = FLAME_OPT) -> None:
    """Append tokenized samples to a sharded Zarr v3 store (created when absent, or re-created
    after an interrupted creation); resumable after a crash at any point."""
    from pipelines.runner import read_split
    from pipelines.stages import shard_stage
    from pointillist_data.flame import resolve_flame_asset

    split_doc = read_split(split) if split else None
    with cli_progress(console) as progress:
        r = shard_stage(samples, out, resolve_flame_asset(flame).num_faces, _parse_box(box), tokens_per_shard,
                        points_per_shard, progress, split=split_doc, flame=str(flame) if flame else None)
    console.print(f"{r['appended']} sample(s) appended ({len(samples) - r['appended']} already present) -> "
                  f"[bold]{out}[/] ({r['samples_in_store']} in total)")


@app.command("validate")
def validate_cmd(store: str = typer.Argument(..., help="Store path or fsspec URL.")) -> None:
    """Check the manifest and the sha256 of every shard and chunk of every array, then the
    content: the grammar of every sequence and monotone offsets (token stores), or views,
    cameras and FLAME parameters (supervision stores). Lists every problem (array, object,
    samples affected) and exits with 1 when there is any."""
    from pointillist_data.store.supervision import check_supervision_store, is_supervision_store
    from pointillist_data.store.token_store import check_token_store

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


@app.command("inspect")
def inspect_cmd(store: str = typer.Argument(..., help="Store path or fsspec URL."),
                png: Path | None = typer.Option(None, "--png", help="Picture to write (default: "
                                                "./<store name>_inspect.png; never into the store)."),
                no_png: bool = typer.Option(False, "--no-png", help="Draw no picture."),
                sample: int = typer.Option(0, "--sample", help="Sample drawn in the picture (index in the store)."),
                where: str | None = typer.Option(None, "--where", help="Filter the table, e.g. \"psnr >= 28 and "
                                                 "split == train\" (the fields of SampleDataset(where=): see README \"Filter fields\")."),
                sort: str | None = typer.Option(None, "--sort", help="Sort the table by a column ('-psnr': descending)."),
                as_json: bool = typer.Option(False, "--json", help="Print only JSON on stdout: the summary, the "
                                             "table and the picture's path ('picture', null with --no-png).")) -> None:
    """A summary, the per-sample table (provenance quality figures and counts; --where / --sort)
    and a PNG of the point cloud and histograms (token stores), or of the views, masks and
    crops (supervision stores). Reads only: the store folder is never written (consumers may
    hold a read-only copy); the picture goes to --png or the current folder."""
    from pointillist_data.store.inspect import TABLE_COLUMNS, plot_store, sample_table, summarize_store
    from pointillist_data.store.supervision import is_supervision_store
    from pointillist_data.store.token_store import TokenStore

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
            t.add_row(*[("-" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]))
                        for c in TABLE_COLUMNS])
        console.print(t)
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


@app.command("split")
def split_cmd(nersemble: Path = typer.Option(..., "--nersemble", help="NeRSemble folder (participant folders 017/ ...)."),
              out: Path = typer.Option(Path("manifests/nersemble_split.json"), "--out", help="Split JSON to write."),
              n_test: int = typer.Option(25, help="Test identities held out."),
              seed: int = typer.Option(0, help="Seed of the draw.")) -> None:
    """Write the train/test split of the participants present (list and seed recorded)."""
    from pointillist_data.manifests import make_split

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
            t.add_row(s["subject_id"], str(s["timesteps"]), str(s["cameras"]), f"{s['foreground']:.1%}", str(s["crops"]))
        console.print(t)
    if picture is not None:
        console.print(f"picture: [bold]{picture}[/]", soft_wrap=True)
