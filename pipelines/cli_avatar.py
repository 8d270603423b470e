"""Decoder and avatar commands: train-decoder and avatar."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from pointillist_model.config import AvatarConfig, DecoderTrainConfig

from .app import FLAME_OPT, app, console, err_console, print_plan, read_image
from .cli_model import selection_line
from .config_cli import config_command


@config_command(app, "train-decoder", DecoderTrainConfig)
def train_decoder_cmd(
    cfg: DecoderTrainConfig,
    resume: Path | None = typer.Option(None, "--resume", help="Checkpoint to resume from."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Train the Gaussian decoder with the AR model frozen (one GPU, CPU, or torchrun DDP), on
    the token store's train split unless --split says otherwise."""

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.decoder_train import DecoderTrainer

    out = Path(cfg.out)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    with cli_progress(console, enabled=rank0) as progress:
        tr = DecoderTrainer(cfg, resolve_flame_asset(flame), progress)
        if rank0:
            print_plan("decoder training", tr.device, tr.cfg.preset, tr.plan.warning)
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


@config_command(app, "avatar", AvatarConfig)
def avatar_cmd(
    cfg: AvatarConfig,
    image: Path = typer.Option(..., "--image", help="Portrait (PNG / JPG; grey and RGBA are converted, the "
                                                    "centred square conditions the AR model)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Decoder checkpoint (train-decoder)."),
    ar_checkpoint: Path | None = typer.Option(None, "--ar-checkpoint", help="AR checkpoint (default: the decoder's)."),
    motion: Path | None = typer.Option(None, "--motion", help="FLAME motion to drive a reenactment: VHAP npz (e.g. "
                                                              "from track --video), GaussianAvatars flame_param.npz, "
                                                              "LAM flame_params.json or a folder of frames."),
    identity: Path | None = typer.Option(None, "--identity", help="FLAME parameters whose shape is used instead of "
                                                                  "fitting the portrait."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Portrait -> animated avatar: GaussianAvatars PLY with bindings, turntable, and a reenactment with --motion."""
    import numpy as np

    from pointillist_data.fileio import atomic_write_text
    from pointillist_data.flame import FlameParams, resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.avatar import avatar_from_portrait, write_avatar

    img = np.asarray(read_image(image, f"--image {image}"))
    asset = resolve_flame_asset(flame)
    mot = None
    if motion:  # the one motion reader of every command (pointillist animate too)
        from pointillist_data.interop.motion import read_motion

        read = read_motion(motion, asset.n_expr, asset.num_vertices)
        for w in read.warnings:
            err_console.print(f"warning: {w}", markup=False, soft_wrap=True)
        mot = read.params
    ident = FlameParams.load(identity) if identity else None
    with cli_progress(console) as progress:  # the fit, the tokens sampled, then each rendered frame
        av, info = avatar_from_portrait(img, checkpoint, asset, cfg, ident, ar_checkpoint, progress)
        files = write_avatar(av, out, asset, cfg, mot, info["animation"], progress)
    # the outputs relative to the folder (a copied avatar folder names its own files)
    atomic_write_text(Path(out) / "avatar.json", json.dumps(
        {**info, "files": {k: os.path.relpath(v, out) for k, v in files.items()}}, indent=1))
    console.print(f"{info['points']} Gaussians (shape: {info['shape_source']}) -> [bold]{files['ply']}[/]")
    if info["degenerate"]:  # the turntable carries it as a banner
        err_console.print(f"warning: {files['ply']}: {info['degenerate']}", markup=False, soft_wrap=True)
    for k in ("turntable_mp4", "turntable_png", "reenactment_mp4", "reenactment_png"):
        if k in files:
            console.print(f"{k.replace('_', ' ')}: [bold]{files[k]}[/]")
