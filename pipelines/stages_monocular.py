"""The stage graph of ``pointillist run --videos DIR``: each monocular video is one identity.

landmarks (MediaPipe, or a VHAP landmark npz per video) -> track (FLAME on a face crop,
:func:`pointillist_data.tracking.monocular.track_video`) -> fit (GaussianAvatars-style on the
tracked NeRF-style export, every ``FittingConfig.holdout_every``-th frame held out: one camera
has no second view to hold out) -> canonicalize -> tokenize (the conditioning portrait is the
first frame's face crop). The runner (:mod:`pipelines.runner`) keys, records, skips and
resumes these stages exactly as the multi-view ones; only the adapters in
:data:`VIDEO_RUNNERS` differ. The supervise stage (multi-view decoder supervision) is not run.
The subject id is the video's file stem; the capture kind recorded is ``monocular``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pointillist_data.capture.video_folder import video_path as _video_file
from pointillist_data.errors import ConfigError, InputError
from pointillist_data.manifests import HashCache

from .stages import RUNNERS, PipelineConfig, tokenize_stage, tracking_config

__all__ = ["MONOCULAR", "VIDEO_STAGES", "video_hash", "video_portrait", "VIDEO_RUNNERS"]

MONOCULAR = "monocular"  # the capture kind in the stage records, the provenance and the dataset card


def video_path(cfg: PipelineConfig, subject: str) -> Path:
    """The video file of ``subject`` in ``cfg.videos``."""
    return _video_file(cfg.videos, subject)
VIDEO_STAGES = ("landmarks", "track", "fit", "canonicalize", "tokenize")  # no multi-view supervision


def _landmark_file(cfg: PipelineConfig, subject: str) -> Path | None:
    if not cfg.landmarks.startswith("files:"):
        return None
    return Path(cfg.landmarks[len("files:"):].format(subject=subject, videos=cfg.videos))


def video_hash(cfg: PipelineConfig, subject: str, cache: HashCache | None = None) -> str:
    """Hash of a video identity's raw inputs: the video's name and content sha256, and the
    landmark file's with ``files:`` landmarks.

    Raises:
        InputError: the landmark file is missing.
    """
    cache = cache or HashCache()
    h = hashlib.sha256(subject.encode())
    files = [video_path(cfg, subject)]
    lm = _landmark_file(cfg, subject)
    if lm is not None:
        if not lm.is_file():
            raise InputError(str(lm), f"landmark file of video {subject} not found (--landmarks {cfg.landmarks})")
        files.append(lm)
    for p in files:
        h.update(f"{p.name}:{cache.sha256(p)}".encode())
    return h.hexdigest()[:16]


def _frames_read(cfg: PipelineConfig, video: Path) -> tuple[list[int], tuple[int, int]]:
    from pointillist_data.capture.video import video_info

    n, h0, w0 = video_info(video)
    sel = cfg.selection()
    s = min(1.0, sel.effective_scale(1.0))  # as track_video reads them
    size = (w0, h0) if s >= 1 else (max(2, round(w0 * s)), max(2, round(h0 * s)))
    return sel.frame_indices(n), size


def run_video_landmarks(cfg: PipelineConfig, subject: str, inputs: dict[str, Path], out: Path, asset) -> dict:
    """Landmarks of the selected frames into ``out/video/landmarks.npz`` (VHAP's normalised format)."""
    from pointillist_data.capture.landmarks_io import write_landmarks
    from pointillist_data.tracking.monocular import video_landmarks

    video = video_path(cfg, subject)
    frames, size = _frames_read(cfg, video)
    lm, missing = video_landmarks(video, frames, size, _landmark_file(cfg, subject),
                                  None if cfg.crop is None else tuple(cfg.crop))
    (out / "video").mkdir(parents=True, exist_ok=True)
    write_landmarks(out / "video" / "landmarks.npz", lm.astype(np.float32), *size)
    return {"sequences": [subject], "cameras": 1, "frames": {subject: len(frames)}, "camera_frames": len(frames),
            "no_face_frames": len(missing), "no_face": [f"{video}: no face in frame {f}" for f in missing]}


def run_video_track(cfg: PipelineConfig, subject: str, inputs: dict[str, Path], out: Path, asset,
                    checkpoint: Path | None = None) -> dict:
    """:func:`~pointillist_data.tracking.monocular.track_video` on the landmarks stage's file."""
    from pointillist_data.tracking.monocular import track_video

    # track_video keeps its checkpoint inside the attempt's folder: a video's track restarts
    rec = track_video(video_path(cfg, subject), asset, out, tracking_config(cfg), cfg.selection(),
                      landmarks=inputs["landmarks"] / "video" / "landmarks.npz")
    m = {k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}
    return {**m, "capture": MONOCULAR, "flagged": rec["flagged"] + rec["no_face"],
            "sequences": [subject], "timesteps": [f"{t:05d}" for t in rec["kept"]], "face_crop": rec["face_crop"]}


def run_video_fit(cfg: PipelineConfig, subject: str, inputs: dict[str, Path], out: Path, asset,
                  checkpoint: Path | None = None) -> dict:
    rec = RUNNERS["fit"](cfg, subject, inputs, out, asset, checkpoint=checkpoint)
    if not np.isfinite(rec["psnr_heldout_db"]):
        raise ConfigError(f"fitting.holdout_every: no frame of video {subject} was held out (too few tracked frames)")
    return {**rec, "heldout": "frames"}


def video_portrait(export: Path, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 conditioning portrait: the first exported frame's face crop
    (the tracking export's images are the square crops around the face), resized."""
    from PIL import Image

    first = sorted((export / "images").glob("*.png"))
    if not first:
        raise InputError(str(export), "the tracking export holds no image for the portrait")
    with Image.open(first[0]) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def run_video_tokenize(cfg: PipelineConfig, subject: str, inputs: dict[str, Path], out: Path, asset) -> dict:
    crop = video_portrait(inputs["track"] / "export", cfg.image_size)
    return tokenize_stage(inputs["canonicalize"] / "canonical.npz", subject, crop, out / "sample.npz",
                          asset.num_faces, sequences=[subject])


VIDEO_RUNNERS = {"landmarks": run_video_landmarks, "track": run_video_track, "fit": run_video_fit,
                 "canonicalize": RUNNERS["canonicalize"], "tokenize": run_video_tokenize}
