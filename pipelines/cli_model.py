"""Model commands: train-ar and generate-points."""

from __future__ import annotations

from pathlib import Path

import typer

from pointillist_model.config import GenerateConfig, TrainConfig

from .app import FLAME_OPT, app, console, err_console, print_plan, read_image
from .config_cli import config_command


@config_command(app, "train-ar", TrainConfig)
def train_ar_cmd(cfg: TrainConfig,
                 resume: Path | None = typer.Option(None, "--resume", help="Checkpoint to resume from."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Train the AR transformer from a token store (one GPU, CPU, or torchrun DDP), on its
    train split unless --split says otherwise."""
    import os

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.train import Trainer

    out = Path(cfg.out)
    tr = Trainer(cfg, resolve_flame_asset(flame))
    if resume:
        tr.load(resume)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    if rank0:
        print_plan("training", tr.device, tr.cfg.preset, tr.plan.warning)
        console.print(selection_line(cfg.split, cfg.where, tr.dataset.subject_ids))
    with cli_progress(console, enabled=rank0) as progress:
        log = tr.train(progress=progress)
    if rank0:
        console.print(f"final loss {log[-1]['loss']:.4f} -> [bold]{out / 'checkpoint.pt'}[/]" if log else "nothing to do")


def selection_line(split: str, where: str | None, subject_ids: list[str]) -> str:
    """What a trainer trains on, said before it starts (``--split all`` says it includes the test split)."""
    from rich.markup import escape

    ids = escape(", ".join(subject_ids[:8]) + (f" ... ({len(subject_ids)})" if len(subject_ids) > 8 else ""))
    cond = escape(f" matching {where}") if where else ""
    if split == "all":
        return (f"[yellow]training on every sample{cond} (--split all), test identities included[/]: "
                f"{len(subject_ids)} sample(s): {ids}")
    return f"training on split {split}{cond}: {len(subject_ids)} sample(s): {ids}"


@config_command(app, "generate-points", GenerateConfig)
def generate_cmd(cfg: GenerateConfig,
                 image: Path = typer.Option(..., "--image", help="Portrait (PNG / JPG; grey and RGBA are "
                                                                 "converted, the centred square is used)."),
                 checkpoint: Path = typer.Option(..., "--checkpoint", help="AR checkpoint."),
                 out: Path = typer.Option(..., "--out", help="Output folder."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Generate point clouds with bindings from a portrait (grammar-constrained, static KV cache)."""
    import numpy as np

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.portrait import generate_from_portrait

    img = np.asarray(read_image(image, f"--image {image}"))
    res = generate_from_portrait(checkpoint, img, resolve_flame_asset(flame), out, cfg, progress=cli_progress(console))
    for r in res:
        console.print(f"{r['points']} points ({r['shape_source']}) -> [bold]{r['ply']}[/]")
        if r["degenerate"]:
            err_console.print(f"warning: {r['ply']}: {r['degenerate']}", markup=False, soft_wrap=True)
    r = res[0]
    compiled = f" ({r['decode_tokens_per_s']:.0f} after {r['compile_seconds']:.1f} s compiling)" \
        if r["compile_seconds"] > 0 else ""
    console.print(f"{r['tokens_per_s']:.0f} tokens/s{compiled} (written to [bold]{out / 'generation.json'}[/])")
