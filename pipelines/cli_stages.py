"""Stage commands: landmarks, track, fit."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .app import FLAME_OPT, app, console


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=console)


@app.command("landmarks")
def landmarks_cmd(capture: Path = typer.Option(..., "--capture", help="NeRSemble folder."),
                  participant: int = typer.Option(..., "--participant", help="Participant id."),
                  sequence: str = typer.Option(..., "--sequence", help="Sequence name (EXP-1-head ...)."),
                  out: Path = typer.Option(..., "--out", help="Folder for <serial>.npz (landmark2d/<DETECTOR>)."),
                  detector: str = typer.Option("mediapipe", help="mediapipe, or files (copy --from)."),
                  from_dir: Path | None = typer.Option(None, "--from", help="Folder of <serial>.npz for 'files'.")) -> None:
    """Detect 2D landmarks per camera and frame, written in VHAP's landmark npz format."""
    from pointillist_data.capture import NersembleSequence
    from pointillist_data.tracking.landmarks import FileLandmarks, MediaPipeDetector, detect_sequence

    seq = NersembleSequence(capture, participant, sequence)
    if detector == "files":
        if from_dir is None:
            raise typer.BadParameter("--from is required with --detector files")
        det = FileLandmarks(from_dir)
        frames = {s: None for s in seq.serials}
    elif detector == "mediapipe":
        det = MediaPipeDetector()
        frames = {s: seq.frames(s) for s in seq.serials}
    else:
        raise typer.BadParameter(f"unknown detector '{detector}' (mediapipe or files)")
    written = detect_sequence(frames, det, out, {s: (seq.cameras[s].width, seq.cameras[s].height) for s in seq.serials})
    missing = sorted(set(seq.serials) - set(written))
    console.print(f"landmarks for {len(written)} camera(s) -> [bold]{out}[/]"
                  + (f"; [yellow]missing: {', '.join(missing)}[/]" if missing else ""))


def _config(config: Path | None, iters: str | None):
    from pointillist_data.tracking.config import TrackingConfig

    cfg = TrackingConfig.load(config) if config else TrackingConfig()
    if iters:  # "first,frame,global"
        a, b, c = (int(x) for x in iters.split(","))
        cfg.first_frame_iters, cfg.frame_iters, cfg.global_iters = a, b, c
    return cfg


@app.command("track")
def track_cmd(out: Path = typer.Option(..., "--out", help="Output folder."),
              capture: Path | None = typer.Option(None, "--capture", help="NeRSemble folder."),
              participant: int | None = typer.Option(None, "--participant"),
              sequence: str | None = typer.Option(None, "--sequence"),
              landmarks: Path | None = typer.Option(None, "--landmarks", help="Landmark folder (<serial>.npz) or, "
                                                    "with --video, one npz (VHAP format: x/w, y/h)."),
              video: Path | None = typer.Option(None, "--video", help="Track a monocular video instead."),
              focal: float | None = typer.Option(None, help="Focal guess (pixels) for --video."),
              config: Path | None = typer.Option(None, "--config", help="TrackingConfig JSON."),
              iters: str | None = typer.Option(None, help="Override iterations: first,frame,global."),
              flame: Path | None = FLAME_OPT) -> None:
    """Track FLAME (VHAP style) and write tracked_flame_params.npz and the NeRF-style export."""
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.tracking.landmarks import MediaPipeDetector, load_landmarks
    from pointillist_data.tracking.stage import load_sequence, monocular_data, run_tracking

    cfg = _config(config, iters)
    if video is not None:
        if landmarks is not None:
            from pointillist_data.capture.video import video_info

            _, h, w = video_info(video)
            lm = load_landmarks(landmarks, w, h)
        else:
            from pointillist_data.capture.video import read_video

            det = MediaPipeDetector()
            import numpy as np

            res = [det.detect(f) for f in read_video(video)]
            L = next((r.shape[0] for r in res if r is not None), 478)
            lm = np.stack([r if r is not None else np.zeros((L, 3), np.float32) for r in res])
        data = monocular_data(video, lm, focal)
        cfg.optimize_focal = True
        cfg.optimize_static_offset = False
    else:
        if capture is None or participant is None or sequence is None or landmarks is None:
            raise typer.BadParameter("give --capture, --participant, --sequence and --landmarks (or --video)")
        data = load_sequence(capture, participant, sequence, landmarks)
    asset = resolve_flame_asset(flame)
    with _progress() as prog:
        task = prog.add_task("tracking", total=len(data.landmarks) + cfg.global_iters, info="")

        def cb(stage: str, i: int, loss: float) -> None:
            prog.update(task, advance=1 if stage == "sequential" else 10, info=f"{stage} {i}: loss {loss:.4g}")

        rec = run_tracking(data, asset, out, cfg, cb)
    m = rec["metrics"]
    console.print(f"tracked {m['frames_tracked']}/{m['frames_total']} frames, landmark error "
                  f"{m['landmark_error_px_mean']:.2f} px -> [bold]{out}[/] (overlay: {out / 'overlay.png'})")
    for f in rec["flagged"]:
        console.print(f"[yellow]flagged[/]: {json.dumps(f)}")


@app.command("fit")
def fit_cmd(tracking: Path = typer.Option(..., "--tracking", help="Tracking output folder (holding export/)."),
            out: Path = typer.Option(..., "--out", help="Output folder."),
            config: Path | None = typer.Option(None, "--config", help="FittingConfig JSON."),
            iterations: int | None = typer.Option(None, help="Override the number of iterations."),
            cuda_preset: bool = typer.Option(False, "--cuda-preset", help="Upstream-like CUDA defaults."),
            ply_sh_degree: int | None = typer.Option(
                None, "--ply-sh-degree", help="SH degree of the written PLY (zero-padded); 3 for GaussianAvatars' "
                                              "default --sh_degree 3. Default: the fit's SH degree."),
            flame: Path | None = FLAME_OPT) -> None:
    """Fit Gaussians bound to FLAME faces (GaussianAvatars style, 4..15 per face)."""
    from pointillist_data.fitting.config import FittingConfig, cuda_defaults
    from pointillist_data.fitting.stage import run_fitting
    from pointillist_data.flame import resolve_flame_asset

    cfg = FittingConfig.load(config) if config else (cuda_defaults() if cuda_preset else FittingConfig())
    if iterations:
        cfg.iterations = iterations
    if ply_sh_degree is not None:
        try:
            cfg = FittingConfig(**{**cfg.to_dict(), "ply_sh_degree": ply_sh_degree})
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--ply-sh-degree") from None
    asset = resolve_flame_asset(flame)
    export = tracking / "export" if (tracking / "export").exists() else tracking
    with _progress() as prog:
        task = prog.add_task("fitting", total=cfg.iterations, info="")

        def cb(it: int, m: dict) -> None:
            prog.update(task, completed=it, info=f"loss {m['loss']:.4f}  PSNR {m['psnr']:.2f} dB  "
                                                  f"{m['gaussians']} Gaussians")

        rec = run_fitting(export, asset, out, cfg, cb)
    m = rec["metrics"]
    console.print(f"held-out camera PSNR {m['heldout']['psnr']:.2f} dB, SSIM {m['heldout']['ssim']:.3f}; "
                  f"{m['gaussians']} Gaussians ({m['per_face']['empty_faces']} empty faces, max "
                  f"{m['per_face']['max']} per face) -> [bold]{out}[/] ({out / 'heldout.png'})")
