"""``pointillist animate``: drive an existing avatar with a FLAME motion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from pointillist_data.reenactment.config import AnimateConfig

from .app import FLAME_OPT, app, console, err_console
from .config_cli import config_command


@config_command(app, "animate", AnimateConfig)
def animate_cmd(
    cfg: AnimateConfig,
    avatar: Path = typer.Option(..., "--avatar", help="Avatar folder: point_cloud.ply + flame_param.npz (from fit or "
                                                      "avatar) or a GaussianAvatars output folder "
                                                      "(point_cloud/iteration_<N>/)."),
    motion: Path = typer.Option(..., "--motion", help="FLAME motion: VHAP tracked_flame_params_<E>.npz (or its "
                                                      "folder), GaussianAvatars flame_param.npz, LAM "
                                                      "flame_params.json, or a folder of per-frame .npz / .json."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: <avatar>/animate-<motion name>)."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Existing avatar + FLAME motion -> reenactment.mp4 / .png, the driving mesh beside the avatar."""
    from pointillist_data.devices import resolve_device
    from pointillist_data.fileio import atomic_write_text
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.interop.motion import read_motion
    from pointillist_data.progress import cli_progress
    from pointillist_data.reenactment.render import load_avatar_folder, reenact, write_reenactment

    asset = resolve_flame_asset(flame)
    plan = resolve_device(cfg.device, where="--device")
    av = load_avatar_folder(avatar, asset)
    read = read_motion(motion, asset.n_expr, asset.num_vertices)
    for w in read.warnings:
        err_console.print(f"warning: {w}", markup=False, soft_wrap=True)
    out = out or avatar / f"animate-{motion.stem or motion.name}"
    with cli_progress(console) as progress:
        r = reenact(av, read.params, asset, cfg, plan.device, progress)
        files = write_reenactment(r.frames, out, cfg.fps)
    cfg.save(out / "animate_config.json")
    summary = {"avatar": str(avatar.resolve()), "ply": str(av.ply.resolve()), "gaussians": len(av.gaussians),
               "motion": read.source, "motion_format": read.format, "frames": int(r.frames.shape[0]),
               "animation": r.mode, "warnings": read.warnings,
               "files": {k: os.path.relpath(v, out) for k, v in files.items()}}
    atomic_write_text(out / "animate.json", json.dumps(summary, indent=1))
    console.print(f"{len(av.gaussians)} Gaussians x {summary['frames']} frames of {read.format} motion "
                  f"({r.mode}) -> [bold]{files['reenactment_mp4']}[/], [bold]{files['reenactment_png']}[/]")
