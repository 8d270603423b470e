"""Model commands: train-ar and generate-points."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import FLAME_OPT, app, console


@app.command("train-ar")
def train_ar_cmd(store: str = typer.Option(..., "--store", help="Token store path or URL."),
                 out: Path = typer.Option(..., "--out", help="Checkpoint and log folder."),
                 preset: str = typer.Option("tiny", help="Model preset: paper or tiny."),
                 steps: int = typer.Option(1000, help="Optimisation steps."),
                 batch_size: int = typer.Option(4, help="Windows per step (per rank)."),
                 window: int | None = typer.Option(None, help="Tokens per window (default: the preset's)."),
                 lr: float = typer.Option(1e-4, help="Peak AdamW learning rate."),
                 resume: Path | None = typer.Option(None, help="Checkpoint to resume from."),
                 config: Path | None = typer.Option(None, "--config", help="TrainConfig JSON (overrides the options)."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Train the AR transformer from a token store (one GPU, CPU, or torchrun DDP)."""
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_model.train import TrainConfig, Trainer

    kw = dict(store=store, out=str(out), preset=preset, steps=steps, batch_size=batch_size, window=window, lr=lr)
    if config:
        kw.update(json.loads(config.read_text()))
    tr = Trainer(TrainConfig(**kw), resolve_flame_asset(flame))
    if resume:
        tr.load(resume)
    from pointillist_data.progress import cli_progress

    with cli_progress(console, enabled=tr.rank == 0) as progress:
        log = tr.train(progress=progress, on_log=lambda r: progress.log(
            f"step {r['step']}: loss {r['loss']:.4f}, {r.get('tokens_per_s', 0):.0f} tokens/s, lr {r['lr']:.2e}"))
    console.print(f"final loss {log[-1]['loss']:.4f} -> [bold]{out / 'checkpoint.pt'}[/]" if log else "nothing to do")


@app.command("generate-points")
def generate_cmd(image: Path = typer.Option(..., "--image", help="Portrait (PNG / JPG)."),
                 checkpoint: Path = typer.Option(..., "--checkpoint", help="AR checkpoint."),
                 out: Path = typer.Option(..., "--out", help="Output folder."),
                 num: int = typer.Option(1, help="Avatars per batch."),
                 max_points: int = typer.Option(30000, help="Longest point cloud."),
                 temperature: float = typer.Option(1.0), top_k: int | None = typer.Option(None),
                 top_p: float | None = typer.Option(0.95), seed: int = typer.Option(0),
                 flame: Path | None = FLAME_OPT) -> None:
    """Generate point clouds with bindings from a portrait (grammar-constrained, KV-cached)."""
    import imageio.v3 as iio
    import numpy as np

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_model.portrait import generate_from_portrait

    img = np.asarray(iio.imread(image))[..., :3]
    res = generate_from_portrait(checkpoint, img, resolve_flame_asset(flame), out, num, max_points, temperature, top_k,
                                 top_p, seed)
    for r in res:
        console.print(f"{r['points']} points ({r['shape_source']}) -> [bold]{r['ply']}[/]")
