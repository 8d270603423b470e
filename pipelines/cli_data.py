"""Dataset commands: canonicalize, tokenize, shard, validate, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .app import FLAME_OPT, app, console


def _parse_box(box: str):
    """``default`` or ``x0,y0,z0,x1,y1,z1`` (metres) -> :class:`QuantBox`."""
    from pointillist_data.tokens import DEFAULT_BOX, QuantBox

    if box == "default":
        return DEFAULT_BOX
    v = [float(x) for x in box.split(",")]
    if len(v) != 6:
        raise typer.BadParameter(f"--box needs 6 numbers x0,y0,z0,x1,y1,z1, got '{box}'")
    return QuantBox(tuple(v[:3]), tuple(v[3:]))


@app.command("canonicalize")
def canonicalize_cmd(fit: Path = typer.Option(..., "--fit", help="Fitting output folder (point_cloud.ply + flame_param.npz)."),
                     out: Path = typer.Option(..., "--out", help="canonical.npz to write."),
                     flame: Path | None = FLAME_OPT) -> None:
    """Global point cloud at the identity's canonical FLAME pose (zero expression and pose)."""
    from pointillist_data.canonical import canonicalize
    from pointillist_data.flame import FlameParams, resolve_flame_asset
    from pointillist_data.gaussians import read_ply

    asset = resolve_flame_asset(flame)
    cloud = canonicalize(read_ply(fit / "point_cloud.ply", asset.num_faces), FlameParams.load(fit / "flame_param.npz"), asset)
    cloud.save(out)
    console.print(f"{len(cloud)} canonical points -> [bold]{out}[/]")


@app.command("tokenize")
def tokenize_cmd(canonical: Path = typer.Option(..., "--canonical", help="canonical.npz from `canonicalize`."),
                 subject: str = typer.Option(..., "--subject", help="Subject id (participant id)."),
                 out: Path = typer.Option(..., "--out", help="sample.npz to write."),
                 image: Path | None = typer.Option(None, "--image", help="Conditioning crop (PNG/JPG)."),
                 box: str = typer.Option("default", help="Quantisation box: 'default' or 'x0,y0,z0,x1,y1,z1' (m)."),
                 clamp: bool = typer.Option(False, help="Clamp points outside the box (with a counted warning)."),
                 image_size: int = typer.Option(128, help="Side of the square conditioning crop.")) -> None:
    """Quantise to 1024 bins in yzx order with binding tokens (paper section 3.2)."""
    import imageio.v3 as iio
    import numpy as np
    from PIL import Image

    from pointillist_data.canonical import CanonicalCloud, to_sample
    from pointillist_data.tokens import Vocabulary

    qb = _parse_box(box)
    img = np.zeros((image_size, image_size, 3), np.uint8)
    if image is not None:
        img = np.asarray(Image.fromarray(np.asarray(iio.imread(image))[..., :3]).resize((image_size, image_size)))
    s = to_sample(subject, CanonicalCloud.load(canonical), img, qb, Vocabulary(), "clamp" if clamp else "error")
    s.save(out)
    console.print(f"{s.num_points} points -> {len(s.tokens)} tokens -> [bold]{out}[/]")


@app.command("shard")
def shard_cmd(samples: list[Path] = typer.Argument(..., help="sample.npz files from `tokenize`."),
              out: str = typer.Option(..., "--out", help="Store path or fsspec URL (s3://...)."),
              box: str = typer.Option("default", help="Quantisation box of a new store (as for tokenize)."),
              tokens_per_shard: int = typer.Option(1 << 21, help="Tokens per shard of a new store."),
              points_per_shard: int = typer.Option(1 << 19, help="Rows per shard of the per-point arrays.")) -> None:
    """Append tokenized samples to a sharded Zarr v3 store (created when absent); resumable."""
    import zarr

    from pointillist_data.canonical import CANONICAL_PARAMS
    from pointillist_data.store import StoreError
    from pointillist_data.store_write import Sample, StoreConfig, TokenStoreWriter

    loaded = [Sample.load(p) for p in samples]
    try:
        w = TokenStoreWriter.open(out)
    except (StoreError, FileNotFoundError, zarr.errors.GroupNotFoundError):  # no store yet
        qb = _parse_box(box)
        h, wd = loaded[0].image.shape[:2]
        tc = min(1 << 17, tokens_per_shard)
        pc = min(1 << 15, points_per_shard)
        w = TokenStoreWriter.create(out, StoreConfig(box=qb, canonical=CANONICAL_PARAMS, image_size=(h, wd),
                                                     tokens_per_shard=tokens_per_shard, tokens_per_chunk=tc,
                                                     points_per_shard=points_per_shard, points_per_chunk=pc))
    n = w.append(loaded, skip_existing=True)
    console.print(f"{n} sample(s) appended ({len(loaded) - n} already present) -> [bold]{out}[/] "
                  f"({w.num_samples} in total)")


@app.command("validate")
def validate_cmd(store: str = typer.Argument(..., help="Store path or fsspec URL.")) -> None:
    """Check checksums of every shard, the grammar of every sequence and monotone offsets
    (token stores), or views, cameras and FLAME parameters (supervision stores)."""
    from pointillist_data.store import validate_store
    from pointillist_data.supervision import is_supervision_store, validate_supervision_store

    if is_supervision_store(store):
        v = validate_supervision_store(store)
        console.print(f"[green]valid[/]: supervision store, {v['samples']} identities, {v['views']} views "
                      f"({v['timesteps']} timesteps, {v['cameras']} cameras) at {v['image_size'][1]}x"
                      f"{v['image_size'][0]}, {v['shards_checked']} shards checked (format {v['format_version']})")
        return
    s = validate_store(store)
    console.print(f"[green]valid[/]: {s['samples']} samples, {s['points']} points, {s['tokens']} tokens, "
                  f"{s['shards_checked']} shards checked (format {s['format_version']})")


@app.command("inspect")
def inspect_cmd(store: str = typer.Argument(..., help="Store path or fsspec URL."),
                png: Path | None = typer.Option(None, "--png", help="Picture to write (default: STORE/inspect.png)."),
                as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """A summary (per-subject counts) and a PNG of the point cloud and histograms (token
    stores), or of the views, masks and crops (supervision stores)."""
    from pointillist_data.inspect import plot_store, summarize_store
    from pointillist_data.store import TokenStore, local_path
    from pointillist_data.supervision import is_supervision_store

    if is_supervision_store(store):
        _inspect_supervision(store, png, as_json)
        return

    st = TokenStore.open(store)
    summary = summarize_store(st)
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        t = Table(title=f"{store}: {summary['samples']} samples, {summary['points_total']} points, "
                        f"vocabulary {summary['vocabulary']}")
        for c in ("subject", "points", "tokens", "faces used", "max per face"):
            t.add_column(c)
        for s in summary["subjects"]:
            t.add_row(s["subject_id"], str(s["points"]), str(s["tokens"]), str(s["faces_used"]), str(s["max_per_face"]))
        console.print(t)
    if len(st):
        lp = local_path(store)
        out = png or ((lp / "inspect.png") if lp is not None else Path("inspect.png"))
        console.print(f"picture: [bold]{plot_store(st, out)}[/]")


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
    out.write_text(json.dumps(split, indent=1) + "\n")
    console.print(f"{len(split['train'])} train, {len(split['test'])} test -> [bold]{out}[/]")


def _inspect_supervision(store: str, png: Path | None, as_json: bool) -> None:
    from pointillist_data.store import local_path
    from pointillist_data.supervision import SupervisionStore
    from pointillist_data.supervision_inspect import plot_supervision, summarize_supervision

    st = SupervisionStore.open(store)
    summary = summarize_supervision(st)
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        H, W = summary["image_size"]
        t = Table(title=f"{store}: {summary['samples']} identities, {summary['views']} views at {W}x{H}")
        for c in ("subject", "timesteps", "cameras", "foreground", "crops"):
            t.add_column(c)
        for s in summary["subjects"]:
            t.add_row(s["subject_id"], str(s["timesteps"]), str(s["cameras"]), f"{s['foreground']:.1%}", str(s["crops"]))
        console.print(t)
    if len(st):
        lp = local_path(store)
        out = png or ((lp / "inspect.png") if lp is not None else Path("inspect.png"))
        console.print(f"picture: [bold]{plot_supervision(st, out)}[/]")
