"""Model commands: train-ar and generate-points."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .app import FLAME_OPT, app, console, read_image


class Preset(str, Enum):
    """Model presets: the paper's (dim 1024, depth 24, 16 heads; needs CUDA) and a tiny one for
    CPUs; ``auto`` picks the paper's on CUDA, the tiny one otherwise."""

    auto = "auto"
    paper = "paper"
    tiny = "tiny"


DEVICE_OPT = typer.Option("auto", "--device", help="auto (CUDA when there is a GPU), cpu, cuda or cuda:N.")


def print_plan(what: str, trainer) -> None:
    """The device and model preset a trainer resolved, and its warning (a CPU budget on a
    machine with CUDA)."""
    console.print(f"{what} on {trainer.device} ({trainer.cfg.preset} preset)")
    if trainer.plan.warning:
        console.print(f"[yellow]warning[/]: {trainer.plan.warning}", soft_wrap=True)


@app.command("train-ar")
def train_ar_cmd(store: str = typer.Option(..., "--store", help="Token store path or URL."),
                 out: Path = typer.Option(..., "--out", help="Checkpoint and log folder."),
                 preset: Preset = typer.Option(Preset.auto, help="Model preset (auto: paper on CUDA, else tiny)."),
                 device: str = DEVICE_OPT,
                 steps: int = typer.Option(1000, min=1, help="Optimisation steps."),
                 batch_size: int = typer.Option(4, min=1, help="Windows per step (per rank)."),
                 window: int | None = typer.Option(None, min=8, help="Tokens per window (default: the preset's)."),
                 lr: float = typer.Option(1e-4, min=0.0, help="Peak AdamW learning rate."),
                 resume: Path | None = typer.Option(None, help="Checkpoint to resume from."),
                 split: str = typer.Option("train", "--split", help="Train on the samples of this split only "
                                                                    "(the store's train/test split); 'all': every "
                                                                    "sample, test identities included."),
                 where: str | None = typer.Option(None, "--where", help="Train on the samples matching this "
                                                                        "filter only, e.g. \"psnr >= 28\"."),
                 config: Path | None = typer.Option(None, "--config", help="TrainConfig JSON (overrides the options)."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Train the AR transformer from a token store (one GPU, CPU, or torchrun DDP), on its
    train split unless --split says otherwise."""
    import os

    from pointillist_data.fileio import build_config, read_json_object
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.train import TrainConfig, Trainer

    kw = dict(store=store, out=str(out), preset=preset.value, steps=steps, batch_size=batch_size, window=window,
              lr=lr, split=split, where=where, device=device)
    if config:
        kw.update(read_json_object(config))
    cfg = build_config(TrainConfig, kw, str(config) if config else "options")
    tr = Trainer(cfg, resolve_flame_asset(flame))
    if resume:
        tr.load(resume)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    if rank0:
        print_plan("training", tr)
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


@app.command("generate-points")
def generate_cmd(image: Path = typer.Option(..., "--image", help="Portrait (PNG / JPG)."),
                 checkpoint: Path = typer.Option(..., "--checkpoint", help="AR checkpoint."),
                 out: Path = typer.Option(..., "--out", help="Output folder."),
                 num: int = typer.Option(1, help="Avatars to generate for the portrait."),
                 batch_size: int | None = typer.Option(None, help="Avatars decoded together (default: all)."),
                 max_points: int = typer.Option(30000, help="Longest point cloud."),
                 min_points: int = typer.Option(1, help="Shortest point cloud."),
                 temperature: float = typer.Option(1.0), top_k: int | None = typer.Option(None),
                 top_p: float | None = typer.Option(0.95), seed: int = typer.Option(0),
                 device: str = typer.Option("cpu", help="cpu or cuda."),
                 threads: int | None = typer.Option(None, help="CPU threads while decoding (default: 1 for one "
                                                                   "avatar at a time, torch's setting for batches; 0: "
                                                                   "torch's setting)."),
                 graph: str = typer.Option("auto", help="Decode step: auto (CUDA graphs on CUDA; on the CPU "
                                                        "torch.compile from 40000 tokens in all (avatars x 4 x "
                                                        "max points), else eager), eager, cuda_graph or compile."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Generate point clouds with bindings from a portrait (grammar-constrained, static KV cache)."""
    import numpy as np

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.portrait import generate_from_portrait

    img = np.asarray(read_image(image, f"--image {image}"))
    res = generate_from_portrait(checkpoint, img, resolve_flame_asset(flame), out, num, max_points, temperature, top_k,
                                 top_p, seed, device=device, min_points=min_points, batch_size=batch_size,
                                 num_threads="auto" if threads is None else (threads or None), graph=graph, progress=cli_progress(console))
    for r in res:
        console.print(f"{r['points']} points ({r['shape_source']}) -> [bold]{r['ply']}[/]")
    r = res[0]
    compiled = f" ({r['decode_tokens_per_s']:.0f} after {r['compile_seconds']:.1f} s compiling)" \
        if r["compile_seconds"] > 0 else ""
    console.print(f"{r['tokens_per_s']:.0f} tokens/s{compiled} (written to [bold]{out / 'generation.json'}[/])")
