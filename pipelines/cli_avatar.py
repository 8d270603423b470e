"""Decoder and avatar commands: train-decoder and avatar."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path

import typer

from .app import FLAME_OPT, app, console, read_image
from .cli_model import DEVICE_OPT, Preset, print_plan, selection_line


class PointSource(str, Enum):
    """Where the decoder's points come from: the AR model, or the canonical FLAME vertices
    (the paper's "FLAME position" ablation)."""

    ar = "ar"
    flame = "flame"


class DecoderInputs(str, Enum):
    """Decoder inputs (paper Table 2): P and F, P only, F only."""

    both = "both"
    position = "position"
    feature = "feature"


class AnimationMode(str, Enum):
    """Binding-based animation: barycentric (paper 4.3) or GaussianAvatars' rigid face frame."""

    barycentric = "barycentric"
    face_frame = "face_frame"


@app.command("train-decoder")
def train_decoder_cmd(
    store: str = typer.Option(..., "--store", help="Token store path or URL."),
    supervision: str | None = typer.Option(None, "--supervision", help="Supervision store (default: supervision.zarr "
                                                                        "beside the token store)."),
    ar_checkpoint: Path = typer.Option(..., "--ar-checkpoint", help="The frozen AR model (train-ar checkpoint)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint, log and AR-feature cache folder."),
    preset: Preset = typer.Option(Preset.auto, help="Decoder preset (auto: paper on CUDA, else tiny)."),
    device: str = DEVICE_OPT,
    steps: int = typer.Option(1000, min=1, help="Optimisation steps."),
    batch_size: int = typer.Option(1, min=1, help="Identities per step (per rank)."),
    cameras_per_step: int = typer.Option(2, min=1, help="Views rendered per identity and step."),
    points_per_step: int | None = typer.Option(None, min=1, help="Random point subset per identity and step."),
    points: PointSource = typer.Option(PointSource.ar, help="Point source ('flame': the FLAME position ablation)."),
    inputs: DecoderInputs = typer.Option(DecoderInputs.both, help="Decoder inputs: P and F, P only, F only."),
    crops: int = typer.Option(1, min=1, help="Conditioning crops per identity (1 = the store's portrait)."),
    holdout: list[str] = typer.Option([], "--holdout", help="Camera serial never trained on (repeatable)."),
    animation: AnimationMode = typer.Option(AnimationMode.barycentric, help="Animation of the decoded Gaussians."),
    lr: float = typer.Option(1e-4, min=0.0, help="Peak AdamW learning rate."),
    w_lpips: float = typer.Option(0.1, "--w-lpips", help="LPIPS loss weight (paper 0.1; 0 needs no weights)."),
    lpips_weights: Path | None = typer.Option(None, "--lpips-weights", help="Local VGG16 LPIPS weights (file or "
                                                                             "folder; nothing is downloaded)."),
    render_scale: float = typer.Option(1.0, help="Render at this fraction of the stored view size."),
    resume: Path | None = typer.Option(None, help="Checkpoint to resume from."),
    split: str = typer.Option("train", "--split", help="Train on the identities of this split of the token store only; "
                                                       "'all': every identity, test identities included."),
    where: str | None = typer.Option(None, "--where", help="Train on the identities matching this filter only, e.g. "
                                                           "\"psnr >= 28\"."),
    config: Path | None = typer.Option(None, "--config", help="DecoderTrainConfig JSON (overrides the options)."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Train the Gaussian decoder with the AR model frozen (one GPU, CPU, or torchrun DDP)."""
    import os

    from pointillist_data.fileio import build_config, read_json_object
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.decoder_train import DecoderTrainConfig, DecoderTrainer

    sup = supervision or str(Path(store.rstrip("/")).parent / "supervision.zarr")
    kw = dict(store=store, supervision=sup, ar_checkpoint=str(ar_checkpoint), out=str(out), preset=preset.value,
              steps=steps, batch_size=batch_size, cameras_per_step=cameras_per_step, points_per_step=points_per_step,
              points=points.value, inputs=inputs.value, crops=crops, holdout_serials=list(holdout),
              animation=animation.value, lr=lr, w_lpips=w_lpips,
              lpips_weights=str(lpips_weights) if lpips_weights else None, render_scale=render_scale, split=split,
              where=where, device=device)
    if config:
        kw.update(read_json_object(config))
    cfg = build_config(DecoderTrainConfig, kw, str(config) if config else "options")
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    with cli_progress(console, enabled=rank0) as progress:
        tr = DecoderTrainer(cfg, resolve_flame_asset(flame), progress)
        if rank0:
            print_plan("decoder training", tr)
            console.print(selection_line(cfg.split, cfg.where, tr.seen_subjects))
        if resume:
            tr.load(resume)
        log = tr.train(progress=progress)
    if not rank0:
        return
    msg = f"final loss {log[-1]['loss']:.4f} (L1 {log[-1]['l1']:.4f}, SSIM {log[-1]['ssim']:.3f})" if log \
        else "nothing to do"
    if cfg.holdout_serials:
        msg += f", held-out PSNR {tr.evaluate()['psnr']:.2f} dB"
    console.print(f"{msg} -> [bold]{out / 'checkpoint.pt'}[/]")


@app.command("avatar")
def avatar_cmd(
    image: Path = typer.Option(..., "--image", help="Portrait (PNG / JPG)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Decoder checkpoint (train-decoder)."),
    ar_checkpoint: Path | None = typer.Option(None, "--ar-checkpoint", help="AR checkpoint (default: the decoder's)."),
    motion: Path | None = typer.Option(None, "--motion", help="FLAME parameters (VHAP npz, e.g. from track --video) "
                                                              "to drive a reenactment."),
    identity: Path | None = typer.Option(None, "--identity", help="FLAME parameters whose shape is used instead of "
                                                                  "fitting the portrait."),
    max_points: int = typer.Option(30000, min=1, help="Longest generated cloud."),
    temperature: float = typer.Option(1.0), top_k: int | None = typer.Option(None),
    top_p: float | None = typer.Option(0.95), seed: int = typer.Option(0),
    size: int = typer.Option(256, min=8, help="Rendered frame size (pixels, even)."),
    frames: int = typer.Option(36, min=1, help="Turntable frames."),
    animation: AnimationMode | None = typer.Option(None, help="Animation (default: the decoder's)."),
    device: str = typer.Option("cpu", help="Torch device."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Portrait -> animated avatar: GaussianAvatars PLY with bindings, turntable, and a reenactment with --motion."""
    import numpy as np

    from pointillist_data.fileio import atomic_write_text
    from pointillist_data.flame import FlameParams, resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.avatar import AvatarConfig, avatar_from_portrait, write_avatar

    img = np.asarray(read_image(image, f"--image {image}"))
    asset = resolve_flame_asset(flame)
    mot = FlameParams.load(motion) if motion else None
    ident = FlameParams.load(identity) if identity else None
    cfg = AvatarConfig(max_points=max_points, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, size=size,
                       turntable_frames=frames, animation=animation.value if animation else None,
                       device=device)
    with console.status("generating the avatar (fit, AR sampling, decoder)"):
        av, info = avatar_from_portrait(img, checkpoint, asset, cfg, ident, ar_checkpoint)
    with cli_progress(console) as progress:
        files = write_avatar(av, out, asset, cfg, mot, info["animation"], progress)
    # the outputs relative to the folder (a copied avatar folder names its own files)
    atomic_write_text(Path(out) / "avatar.json", json.dumps(
        {**info, "files": {k: os.path.relpath(v, out) for k, v in files.items()}}, indent=1))
    console.print(f"{info['points']} Gaussians (shape: {info['shape_source']}) -> [bold]{files['ply']}[/]")
    for k in ("turntable_mp4", "turntable_png", "reenactment_mp4", "reenactment_png"):
        if k in files:
            console.print(f"{k.replace('_', ' ')}: [bold]{files[k]}[/]")
