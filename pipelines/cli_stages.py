"""Stage commands: landmarks, track, fit, supervise. Each is generated from its job config
(:mod:`pipelines.job_configs`, :func:`pipelines.config_cli.config_command`: every field a flag,
defaults < device preset < ``--config FILE`` < explicit flags) and calls the stage function
``pointillist run`` calls (:mod:`pipelines.stages`, :mod:`pipelines.stage_supervise`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pointillist_data.errors import InputError
from pointillist_data.progress import cli_progress

from .app import FLAME_OPT, app, console, print_plan, read_image
from .config_cli import config_command
from .job_configs import FitJob, LandmarksJob, SuperviseJob, TrackJob
from .options import check_crop


@config_command(app, "landmarks", LandmarksJob)
def landmarks_cmd(cfg: LandmarksJob) -> None:
    """Detect 2D landmarks per sequence, camera and frame, written in VHAP's landmark npz format
    (<sequence>/<serial>.npz)."""
    from pipelines.stages import landmarks_stage

    with cli_progress(console) as progress:
        m = landmarks_stage(cfg.capture, cfg.participant, cfg.out, cfg.selection(), cfg.source(), check_crop(cfg.crop),
                            progress)
    console.print(f"landmarks for {m['cameras']} camera(s) of {', '.join(m['sequences'])} -> [bold]{cfg.out}[/]"
                  + (f"; [yellow]missing: {', '.join(m['missing'])}[/]" if m["missing"] else ""))
    for line in m["no_face"]:
        console.print(f"[yellow]flagged[/]: {line}", soft_wrap=True)


def _deterministic() -> None:
    """PyTorch's deterministic kernels, as ``pointillist run`` uses them: multi-threaded CPU
    scatter / index accumulation is order-dependent otherwise, and a fit or tracking resumed
    from its checkpoint would not reproduce an uninterrupted one exactly."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)


def _plan(device: str, cuda_preset: bool = False):
    """The :class:`~pointillist_data.devices.DevicePlan` of a requested device (and budget)."""
    from pointillist_data.devices import resolve_device

    return resolve_device(device, "cuda" if cuda_preset else "auto", "--device", "--cuda-preset")


def _track_preset(requested: dict, **_) -> dict:
    """The tracking preset of the requested device (the single-image budget with ``--image``)."""
    from pointillist_data.tracking.config import PRESETS

    plan = _plan(requested.get("device", "auto"))
    if requested.get("image") is not None:
        from pointillist_data.tracking.single_image import SINGLE_IMAGE_CONFIG

        return {**SINGLE_IMAGE_CONFIG.to_dict(), "device": plan.device}
    return PRESETS[plan.preset](device=plan.device).to_dict()


def _iters_fields(iters: str | None = None, **_) -> dict:
    """``--iters first,frame,global`` as the three iteration fields (explicit flags)."""
    if not iters:
        return {}
    parts = iters.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise InputError("--iters", f"'{iters}' is not three non-negative integers first,frame,global")
    a, b, c = (int(x) for x in parts)
    return {"first_frame_iters": a, "frame_iters": b, "global_iters": c}


def _print_tracking(rec: dict, out: Path) -> None:
    m = rec["metrics"]
    seqs = f" of {', '.join(rec['sequences'])}" if rec.get("sequences") else ""
    console.print(f"tracked {m['frames_tracked']}/{m['frames_total']} frames{seqs}, landmark error "
                  f"{m['landmark_error_px_mean']:.2f} px -> [bold]{out}[/] (overlay: {out / 'overlay.png'})")
    if "landmark_error_iod_pct" in m:  # --video: pixels of the face crop, so say it relative to the face too
        console.print(f"landmark error {m['landmark_error_iod_pct']:.2f} % of the inter-ocular distance")
    for f in rec["flagged"]:
        console.print(f"[yellow]flagged[/]: {json.dumps(f)}")
    for line in rec.get("no_face", []):
        console.print(f"[yellow]flagged[/]: {line}", soft_wrap=True)


@config_command(app, "track", TrackJob, presets=_track_preset, fields_from=_iters_fields)
def track_cmd(cfg: TrackJob,
              iters: str | None = typer.Option(None, "--iters", help="Iterations first,frame,global: sets "
                                               "--first-frame-iters, --frame-iters and --global-iters."),
              flame: Path | None = FLAME_OPT) -> None:
    """Track FLAME (VHAP style) and write tracked_flame_params_<epoch>.npz and the NeRF-style
    export: several sequences of a NeRSemble participant together, a monocular --video, or one
    --image."""
    from pipelines.stages import track_stage
    from pointillist_data.flame import resolve_flame_asset

    plan = _plan(cfg.device)
    print_plan("tracking", plan.device, plan.preset, plan.warning)
    tracking = cfg.tracking(plan.device)
    out, crop = Path(cfg.out), check_crop(cfg.crop)
    asset = resolve_flame_asset(flame)
    _deterministic()
    if cfg.image is not None:
        from pointillist_data.tracking.landmarks import MediaPipeDetector
        from pointillist_data.tracking.single_image import track_image

        img = read_image(cfg.image, f"--image {cfg.image}")
        with console.status(f"fitting FLAME to {Path(cfg.image).name}"):
            rec = track_image(img, asset, out, tracking, MediaPipeDetector(crop=crop), source=str(cfg.image))
        console.print(f"portrait fit: {100 * rec['error_interocular']:.2f} % of the inter-ocular distance")
    else:
        with cli_progress(console) as progress:
            if cfg.video is not None:
                from pointillist_data.tracking.monocular import track_video

                rec = track_video(cfg.video, asset, out, tracking, cfg.selection(), cfg.landmarks, cfg.focal, crop,
                                  progress)
            else:
                rec = track_stage(cfg.capture, cfg.participant, cfg.landmarks, out, asset, tracking, cfg.selection(),
                                  progress, plan.to_dict())
    _print_tracking(rec, out)


def _fit_preset(requested: dict, cuda_preset: bool = False, **_) -> dict:
    """The fitting preset of the requested device (the CUDA one with ``--cuda-preset``)."""
    from pointillist_data.fitting.config import PRESETS

    plan = _plan(requested.get("device", "auto"), cuda_preset)
    return PRESETS[plan.preset](device=plan.device).to_dict()


@config_command(app, "fit", FitJob, presets=_fit_preset)
def fit_cmd(cfg: FitJob,
            cuda_preset: bool = typer.Option(False, "--cuda-preset", help="Upstream-like CUDA preset (600k "
                                             "iterations; what --device auto picks on a GPU) under --config and "
                                             "the flags; needs CUDA."),
            flame: Path | None = FLAME_OPT) -> None:
    """Fit Gaussians bound to FLAME faces (GaussianAvatars style, 4..15 per face) on the union
    of the tracked sequences' timesteps (or the selected ones)."""
    from pipelines.stages import fit_stage
    from pointillist_data.flame import resolve_flame_asset

    plan = _plan(cfg.device, cuda_preset)
    print_plan("fitting", plan.device, plan.preset, plan.warning)
    asset = resolve_flame_asset(flame)
    _deterministic()
    with cli_progress(console) as progress:
        rec = fit_stage(cfg.tracking, cfg.out, asset, cfg.fitting(plan.device), cfg.selection(), progress,
                        plan.to_dict())
    m, out = rec["metrics"], Path(cfg.out)
    console.print(f"held-out camera PSNR {m['heldout']['psnr']:.2f} dB, SSIM {m['heldout']['ssim']:.3f}; "
                  f"{m['gaussians']} Gaussians ({m['per_face']['empty_faces']} empty faces, max "
                  f"{m['per_face']['max']} per face) from {rec['timesteps']} timesteps"
                  + (f" of {', '.join(rec['sequences'])}" if rec["sequences"] else "")
                  + f" -> [bold]{out}[/] ({out / 'heldout.png'})")


def _tracked_sequences(tracking: str) -> list[str] | None:
    """The sequences a tracking output was made from (its ``tracking_record.json``), if it says."""
    rec = Path(tracking) / "tracking_record.json"
    try:
        seqs = json.loads(rec.read_text()).get("sequences")
    except (OSError, ValueError, AttributeError):
        return None
    return list(seqs) if isinstance(seqs, list) and seqs else None


@config_command(app, "supervise", SuperviseJob)
def supervise_cmd(cfg: SuperviseJob) -> None:
    """Decoder supervision of one tracked identity: K timesteps x every camera of frames and
    masks, cameras, the tracked FLAME parameters and conditioning crops, in supervision.npz
    (what `run` appends to its supervision store)."""
    from pipelines.stage_supervise import supervise_stage
    from pointillist_data.capture.selection import CaptureSelection

    sel = CaptureSelection(sequences=cfg.sequences or _tracked_sequences(cfg.tracking))
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    with cli_progress(console) as progress:
        m = supervise_stage(cfg.capture, cfg.participant, cfg.tracking, cfg.out, cfg.supervision(), sel, progress)
    h, w = m["image_size"]
    console.print(f"{m['timesteps']} timesteps x {m['cameras']} cameras at {w}x{h} of {', '.join(m['sequences'])} "
                  f"-> [bold]{cfg.out}[/]")
