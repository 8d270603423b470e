"""Stage commands: landmarks, track, fit. Each calls the stage function ``pointillist run`` calls
(:mod:`pipelines.stages`)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from pointillist_data.errors import InputError
from pointillist_data.progress import cli_progress

from .app import FLAME_OPT, app, console


class Detector(str, Enum):
    """Landmark sources of the ``landmarks`` command."""

    mediapipe = "mediapipe"
    files = "files"


@app.command("landmarks")
def landmarks_cmd(capture: Path = typer.Option(..., "--capture", help="NeRSemble folder."),
                  participant: int = typer.Option(..., "--participant", help="Participant id."),
                  sequence: str = typer.Option(..., "--sequence", help="Sequence name (EXP-1-head ...)."),
                  out: Path = typer.Option(..., "--out", help="Folder for <serial>.npz (landmark2d/<DETECTOR>)."),
                  detector: Detector = typer.Option(Detector.mediapipe, help="MediaPipe face mesh, or landmark "
                                                    "files already on disk (with --from)."),
                  from_dir: str | None = typer.Option(None, "--from", help="Folder of <serial>.npz for 'files' "
                                                      "({capture}, {pid}, {sequence} are filled in).")) -> None:
    """Detect 2D landmarks per camera and frame, written in VHAP's landmark npz format."""
    from pipelines.stages import landmarks_stage

    if detector == Detector.files:
        if not from_dir:
            raise InputError("--from", "required with --detector files")
        source = f"files:{from_dir}"
    else:
        source = "mediapipe"
    with cli_progress(console) as progress:
        m = landmarks_stage(capture, participant, sequence, out, source, progress)
    console.print(f"landmarks for {m['cameras']} camera(s) -> [bold]{out}[/]"
                  + (f"; [yellow]missing: {', '.join(m['missing'])}[/]" if m["missing"] else ""))


def _tracking_config(config: Path | None, iters: str | None):
    from pointillist_data.fileio import build_config
    from pointillist_data.tracking.config import TrackingConfig

    cfg = TrackingConfig.load(config) if config else TrackingConfig()
    if iters:  # "first,frame,global"
        parts = iters.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise InputError("--iters", f"'{iters}' is not three non-negative integers first,frame,global")
        a, b, c = (int(x) for x in parts)
        cfg = build_config(TrackingConfig, {**cfg.to_dict(), "first_frame_iters": a, "frame_iters": b,
                                            "global_iters": c}, "--iters")
    return cfg


def _print_tracking(rec: dict, out: Path) -> None:
    m = rec["metrics"]
    console.print(f"tracked {m['frames_tracked']}/{m['frames_total']} frames, landmark error "
                  f"{m['landmark_error_px_mean']:.2f} px -> [bold]{out}[/] (overlay: {out / 'overlay.png'})")
    for f in rec["flagged"]:
        console.print(f"[yellow]flagged[/]: {json.dumps(f)}")


@app.command("track")
def track_cmd(out: Path = typer.Option(..., "--out", help="Output folder."),
              capture: Path | None = typer.Option(None, "--capture", help="NeRSemble folder."),
              participant: int | None = typer.Option(None, "--participant", help="Participant id."),
              sequence: str | None = typer.Option(None, "--sequence", help="Sequence name."),
              landmarks: Path | None = typer.Option(None, "--landmarks", help="Landmark folder (<serial>.npz) or, "
                                                    "with --video, one npz (VHAP format: x/w, y/h)."),
              video: Path | None = typer.Option(None, "--video", help="Track a monocular video instead."),
              focal: float | None = typer.Option(None, help="Focal guess (pixels) for --video."),
              config: Path | None = typer.Option(None, "--config", help="TrackingConfig JSON."),
              iters: str | None = typer.Option(None, help="Override iterations: first,frame,global."),
              flame: Path | None = FLAME_OPT) -> None:
    """Track FLAME (VHAP style) and write tracked_flame_params_<epoch>.npz and the NeRF-style export."""
    from pipelines.stages import track_stage
    from pointillist_data.flame import resolve_flame_asset

    cfg = _tracking_config(config, iters)
    asset = resolve_flame_asset(flame)
    with cli_progress(console) as progress:
        if video is not None:
            rec = _track_video(video, landmarks, focal, cfg, asset, out, progress)
        else:
            missing = [o for o, v in (("--capture", capture), ("--participant", participant),
                                      ("--sequence", sequence), ("--landmarks", landmarks)) if v is None]
            if missing:
                raise InputError(", ".join(missing), "required (or give --video FILE)")
            rec = track_stage(capture, participant, sequence, landmarks, out, asset, cfg, progress)
    _print_tracking(rec, out)


def _track_video(video: Path, landmarks: Path | None, focal: float | None, cfg, asset, out: Path, progress) -> dict:
    import numpy as np

    from pointillist_data.capture.video import read_video
    from pointillist_data.tracking.landmarks import MediaPipeDetector, load_landmarks
    from pointillist_data.tracking.stage import monocular_data, run_tracking

    if landmarks is not None:
        from pointillist_data.capture.video import video_info

        _, h, w = video_info(video)
        lm = load_landmarks(landmarks, w, h)
    else:
        det = MediaPipeDetector()
        frames = read_video(video)
        res = []
        with progress.task(f"landmarks {video.name}", total=len(frames)) as task:
            for f in frames:
                res.append(det.detect(f))
                task.advance()
        L = next((r.shape[0] for r in res if r is not None), 478)
        lm = np.stack([r if r is not None else np.zeros((L, 3), np.float32) for r in res])
    data = monocular_data(video, lm, focal)
    cfg.optimize_focal = True
    cfg.optimize_static_offset = False
    return run_tracking(data, asset, out, cfg, progress)


@app.command("fit")
def fit_cmd(tracking: Path = typer.Option(..., "--tracking", help="Tracking output folder (holding export/)."),
            out: Path = typer.Option(..., "--out", help="Output folder."),
            config: Path | None = typer.Option(None, "--config", help="FittingConfig JSON."),
            iterations: int | None = typer.Option(None, min=1, help="Override the number of iterations."),
            cuda_preset: bool = typer.Option(False, "--cuda-preset", help="Upstream-like CUDA defaults."),
            ply_sh_degree: int | None = typer.Option(
                None, "--ply-sh-degree", help="SH degree of the written PLY (zero-padded); 3 for GaussianAvatars' "
                                              "default --sh_degree 3. Default: the fit's SH degree."),
            flame: Path | None = FLAME_OPT) -> None:
    """Fit Gaussians bound to FLAME faces (GaussianAvatars style, 4..15 per face)."""
    from pipelines.stages import fit_stage
    from pointillist_data.fileio import build_config
    from pointillist_data.fitting.config import FittingConfig, cuda_defaults
    from pointillist_data.flame import resolve_flame_asset

    cfg = FittingConfig.load(config) if config else (cuda_defaults() if cuda_preset else FittingConfig())
    if iterations:
        cfg = build_config(FittingConfig, {**cfg.to_dict(), "iterations": iterations}, "--iterations")
    if ply_sh_degree is not None:
        cfg = build_config(FittingConfig, {**cfg.to_dict(), "ply_sh_degree": ply_sh_degree}, "--ply-sh-degree")
    asset = resolve_flame_asset(flame)
    with cli_progress(console) as progress:
        rec = fit_stage(tracking, out, asset, cfg, progress)
    m = rec["metrics"]
    console.print(f"held-out camera PSNR {m['heldout']['psnr']:.2f} dB, SSIM {m['heldout']['ssim']:.3f}; "
                  f"{m['gaussians']} Gaussians ({m['per_face']['empty_faces']} empty faces, max "
                  f"{m['per_face']['max']} per face) -> [bold]{out}[/] ({out / 'heldout.png'})")
