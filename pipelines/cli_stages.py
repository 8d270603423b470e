"""Stage commands: landmarks, track, fit. Each calls the stage function ``pointillist run`` calls
(:mod:`pipelines.stages`)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from pointillist_data.errors import InputError
from pointillist_data.progress import cli_progress

from .app import FLAME_OPT, app, console, print_plan, read_image
from .options import CAMERAS_OPT, CROP_OPT, FRAMES_OPT, SCALE_OPT, SEQUENCES_OPT, parse_crop, selection_of


class Detector(str, Enum):
    """Landmark sources of the ``landmarks`` command."""

    mediapipe = "mediapipe"
    files = "files"


@app.command("landmarks")
def landmarks_cmd(capture: Path = typer.Option(..., "--capture", help="NeRSemble folder."),
                  participant: int = typer.Option(..., "--participant", help="Participant id."),
                  out: Path = typer.Option(..., "--out", help="Folder for <sequence>/<serial>.npz (landmark2d/<DETECTOR>)."),
                  detector: Detector = typer.Option(Detector.mediapipe, help="MediaPipe (face detector, then the face "
                                                    "mesh on a crop), or landmark files already on disk (with --from)."),
                  from_dir: str | None = typer.Option(None, "--from", help="Folder of <serial>.npz for 'files' "
                                                      "({capture}, {pid}, {sequence} are filled in)."),
                  sequences: str | None = SEQUENCES_OPT, scale: str | None = SCALE_OPT, frames: str = FRAMES_OPT,
                  cameras: str | None = CAMERAS_OPT, crop: str | None = CROP_OPT) -> None:
    """Detect 2D landmarks per sequence, camera and frame, written in VHAP's landmark npz format."""
    from pipelines.stages import landmarks_stage

    if detector == Detector.files:
        if not from_dir:
            raise InputError("--from", "required with --detector files")
        source = f"files:{from_dir}"
    else:
        source = "mediapipe"
    sel = selection_of(scale, frames, cameras, sequences)
    with cli_progress(console) as progress:
        m = landmarks_stage(capture, participant, out, sel, source, parse_crop(crop), progress)
    console.print(f"landmarks for {m['cameras']} camera(s) of {', '.join(m['sequences'])} -> [bold]{out}[/]"
                  + (f"; [yellow]missing: {', '.join(m['missing'])}[/]" if m["missing"] else ""))
    for line in m["no_face"]:
        console.print(f"[yellow]flagged[/]: {line}", soft_wrap=True)


DEVICE_OPT = typer.Option("auto", "--device", help="auto (CUDA with the stage's CUDA preset when there is a GPU, "
                          "else the CPU budget), cpu or cuda.")


def _deterministic() -> None:
    """PyTorch's deterministic kernels, as ``pointillist run`` uses them: multi-threaded CPU
    scatter / index accumulation is order-dependent otherwise, and a fit or tracking resumed
    from its checkpoint would not reproduce an uninterrupted one exactly."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)


def _tracking_config(config: Path | None, iters: str | None, base=None, device: str = "auto"):
    from pointillist_data.devices import preset_config
    from pointillist_data.fileio import build_config, read_json_object
    from pointillist_data.tracking.config import PRESETS, TrackingConfig

    presets = PRESETS
    if base is not None and not config:  # the single-image fit keeps its own budget on either device
        presets = dict.fromkeys(PRESETS, lambda **kw: TrackingConfig(**{**base.to_dict(), **kw}))
    cfg, plan = preset_config(TrackingConfig, presets, read_json_object(config) if config else {}, device,
                              where=str(config) if config else "options")
    print_plan("tracking", plan.device, plan.preset, plan.warning)
    if iters:  # "first,frame,global"
        parts = iters.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise InputError("--iters", f"'{iters}' is not three non-negative integers first,frame,global")
        a, b, c = (int(x) for x in parts)
        cfg = build_config(TrackingConfig, {**cfg.to_dict(), "first_frame_iters": a, "frame_iters": b,
                                            "global_iters": c}, "--iters")
    return cfg, plan


def _print_tracking(rec: dict, out: Path) -> None:
    m = rec["metrics"]
    seqs = f" of {', '.join(rec['sequences'])}" if rec.get("sequences") else ""
    console.print(f"tracked {m['frames_tracked']}/{m['frames_total']} frames{seqs}, landmark error "
                  f"{m['landmark_error_px_mean']:.2f} px -> [bold]{out}[/] (overlay: {out / 'overlay.png'})")
    for f in rec["flagged"]:
        console.print(f"[yellow]flagged[/]: {json.dumps(f)}")
    for line in rec.get("no_face", []):
        console.print(f"[yellow]flagged[/]: {line}", soft_wrap=True)


@app.command("track")
def track_cmd(out: Path = typer.Option(..., "--out", help="Output folder."),
              capture: Path | None = typer.Option(None, "--capture", help="NeRSemble folder."),
              participant: int | None = typer.Option(None, "--participant", help="Participant id."),
              landmarks: Path | None = typer.Option(None, "--landmarks", help="Landmark folder (<sequence>/<serial>.npz, "
                                                    "or <serial>.npz for one sequence) or, with --video, one npz "
                                                    "(VHAP format: x/w, y/h)."),
              video: Path | None = typer.Option(None, "--video", help="Track a monocular video instead."),
              image: Path | None = typer.Option(None, "--image", help="Fit a single portrait (PNG/JPG; grey and "
                                                "RGBA are converted) instead."),
              focal: float | None = typer.Option(None, help="Focal guess (pixels) for --video."),
              config: Path | None = typer.Option(None, "--config", help="TrackingConfig JSON."),
              iters: str | None = typer.Option(None, help="Override iterations: first,frame,global."),
              sequences: str | None = SEQUENCES_OPT, scale: str | None = SCALE_OPT, frames: str = FRAMES_OPT,
              cameras: str | None = CAMERAS_OPT, crop: str | None = CROP_OPT,
              flame: Path | None = FLAME_OPT, device: str = DEVICE_OPT) -> None:
    """Track FLAME (VHAP style) and write tracked_flame_params_<epoch>.npz and the NeRF-style
    export: several sequences of a NeRSemble participant together, a monocular --video, or one
    --image."""
    from pipelines.stages import track_stage
    from pointillist_data.flame import resolve_flame_asset

    if video is not None and image is not None:
        raise InputError("--video, --image", "give one of them")
    sel = selection_of(scale, frames, cameras, sequences)
    asset = resolve_flame_asset(flame)
    _deterministic()
    if image is not None:
        rec = _track_image(image, config, iters, asset, out, parse_crop(crop), device)
    else:
        cfg, plan = _tracking_config(config, iters, device=device)
        with cli_progress(console) as progress:
            if video is not None:
                from pointillist_data.tracking.monocular import track_video

                rec = track_video(video, asset, out, cfg, sel, landmarks, focal, parse_crop(crop), progress)
            else:
                missing = [o for o, v in (("--capture", capture), ("--participant", participant),
                                          ("--landmarks", landmarks)) if v is None]
                if missing:
                    raise InputError(", ".join(missing), "required (or give --video FILE or --image FILE)")
                rec = track_stage(capture, participant, landmarks, out, asset, cfg, sel, progress, plan.to_dict())
    _print_tracking(rec, out)


def _track_image(image: Path, config: Path | None, iters: str | None, asset, out: Path, crop, device: str) -> dict:

    from pointillist_data.tracking.landmarks import MediaPipeDetector
    from pointillist_data.tracking.single_image import SINGLE_IMAGE_CONFIG, track_image

    img = read_image(image)
    cfg, _ = _tracking_config(config, iters, SINGLE_IMAGE_CONFIG, device)
    with console.status(f"fitting FLAME to {image.name}"):
        rec = track_image(img, asset, out, cfg, MediaPipeDetector(crop=crop), source=str(image))
    console.print(f"portrait fit: {100 * rec['error_interocular']:.2f} % of the inter-ocular distance")
    return rec


@app.command("fit")
def fit_cmd(tracking: Path = typer.Option(..., "--tracking", help="Tracking output folder (holding export/)."),
            out: Path = typer.Option(..., "--out", help="Output folder."),
            config: Path | None = typer.Option(None, "--config", help="FittingConfig JSON."),
            iterations: int | None = typer.Option(None, min=1, help="Override the number of iterations."),
            cuda_preset: bool = typer.Option(False, "--cuda-preset", help="Upstream-like CUDA defaults (600k "
                                             "iterations; what --device auto picks on a GPU); needs CUDA."),
            device: str = DEVICE_OPT,
            ply_sh_degree: int | None = typer.Option(
                None, "--ply-sh-degree", help="SH degree of the written PLY (zero-padded); 3 for GaussianAvatars' "
                                              "default --sh_degree 3. Default: the fit's SH degree."),
            sequences: str | None = SEQUENCES_OPT, scale: str | None = SCALE_OPT, frames: str = FRAMES_OPT,
            cameras: str | None = CAMERAS_OPT, flame: Path | None = FLAME_OPT) -> None:
    """Fit Gaussians bound to FLAME faces (GaussianAvatars style, 4..15 per face) on the union
    of the tracked sequences' timesteps (or the selected ones)."""
    from pipelines.stages import fit_stage
    from pointillist_data.devices import preset_config
    from pointillist_data.fileio import build_config, read_json_object
    from pointillist_data.fitting.config import PRESETS, FittingConfig
    from pointillist_data.flame import resolve_flame_asset

    cfg, plan = preset_config(FittingConfig, PRESETS, read_json_object(config) if config else {}, device,
                              "cuda" if cuda_preset else "auto", str(config) if config else "options", "--cuda-preset")
    print_plan("fitting", plan.device, plan.preset, plan.warning)
    if iterations:
        cfg = build_config(FittingConfig, {**cfg.to_dict(), "iterations": iterations}, "--iterations")
    if ply_sh_degree is not None:
        cfg = build_config(FittingConfig, {**cfg.to_dict(), "ply_sh_degree": ply_sh_degree}, "--ply-sh-degree")
    sel = selection_of(scale, frames, cameras, sequences)
    asset = resolve_flame_asset(flame)
    _deterministic()
    with cli_progress(console) as progress:
        rec = fit_stage(tracking, out, asset, cfg, sel, progress, plan.to_dict())
    m = rec["metrics"]
    console.print(f"held-out camera PSNR {m['heldout']['psnr']:.2f} dB, SSIM {m['heldout']['ssim']:.3f}; "
                  f"{m['gaussians']} Gaussians ({m['per_face']['empty_faces']} empty faces, max "
                  f"{m['per_face']['max']} per face) from {rec['timesteps']} timesteps"
                  + (f" of {', '.join(rec['sequences'])}" if rec["sequences"] else "")
                  + f" -> [bold]{out}[/] ({out / 'heldout.png'})")
