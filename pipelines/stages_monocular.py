"""The stage graph of ``pointillist run --videos DIR``: each monocular video is one identity.

landmarks (MediaPipe, or a VHAP landmark npz per video) -> track (FLAME on a face crop,
:func:`pointillist_data.tracking.monocular.track_video`) -> fit (GaussianAvatars-style on the
tracked NeRF-style export, every ``FittingConfig.holdout_every``-th frame held out: one camera
has no second view to hold out) -> canonicalize -> tokenize (the conditioning portrait is the
first frame's face crop) -> supervise (one camera: the export's frames and masks,
:func:`video_supervision`). The runner (:mod:`pipelines.runner`) keys, records, skips and
resumes these stages exactly as the multi-view ones; only the adapters in
:data:`VIDEO_RUNNERS` differ. Masks come from the matting method :func:`video_matting` picks.
The subject id is the video's file stem; the capture kind recorded is ``monocular``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pointillist_data.capture.video_folder import video_path as _video_file
from pointillist_data.errors import ConfigError, InputError
from pointillist_data.manifests import HashCache

from .stages import RUNNERS, PipelineConfig, tokenize_stage, tracking_config

if TYPE_CHECKING:
    from pointillist_data.store.supervision import SupervisionSample

__all__ = ["MONOCULAR", "VIDEO_STAGES", "video_hash", "video_plate", "video_matting", "video_portrait",
           "video_supervision", "VIDEO_RUNNERS"]

MONOCULAR = "monocular"  # the capture kind in the stage records, the provenance and the dataset card


def video_path(cfg: PipelineConfig, subject: str) -> Path:
    """The video file of ``subject`` in ``cfg.videos``."""
    return _video_file(cfg.videos, subject)


PLATE_SUFFIXES = (".png", ".jpg", ".jpeg")


def video_plate(cfg: PipelineConfig, subject: str) -> Path | None:
    """The background plate of a video, ``<subject>_background.png`` (or ``.jpg`` / ``.jpeg``)
    beside it: a still of the empty scene from the same camera, or ``None``."""
    video = video_path(cfg, subject)
    for suffix in PLATE_SUFFIXES:
        p = video.with_name(f"{subject}_background{suffix}")
        if p.is_file():
            return p
    return None


def video_matting(cfg: PipelineConfig, subject: str) -> tuple[str, Path | None]:
    """``(spec, plate)``: how a video identity's masks are made. ``tracking.matting`` or
    ``--matting`` when given; otherwise ``background`` where the video has a plate
    (:func:`video_plate`) and MediaPipe's packaged selfie model where it has none (offline).

    Raises:
        InputError: a method that needs a plate (``threshold``, ``background``, ``bgmv2``) and
            no plate beside the video (the message names the file looked for).
    """
    from pointillist_data.capture.matting import parse_matting
    from pointillist_data.capture.matting_spec import NEEDS_PLATE

    plate = video_plate(cfg, subject)
    spec = cfg.tracking.get("matting") or cfg.matting or ("background" if plate is not None else "mediapipe")
    if parse_matting(spec)[0] in NEEDS_PLATE and plate is None:
        want = video_path(cfg, subject).with_name(f"{subject}_background.png")
        raise InputError(str(want), f"not found: matting '{spec}' needs the background plate of video {subject} "
                         "(a still of the empty scene from the same camera)",
                         hint="add the plate, or use --matting mediapipe (no plate needed)")
    return spec, plate


VIDEO_STAGES = ("landmarks", "track", "fit", "canonicalize", "tokenize", "supervise")


def _landmark_file(cfg: PipelineConfig, subject: str) -> Path | None:
    if not cfg.landmarks.startswith("files:"):
        return None
    return Path(cfg.landmarks[len("files:"):].format(subject=subject, videos=cfg.videos))


def video_hash(cfg: PipelineConfig, subject: str, cache: HashCache | None = None) -> str:
    """Hash of a video identity's raw inputs: the video's name and content sha256, its
    background plate's (:func:`video_plate`) when there is one, and the landmark file's with
    ``files:`` landmarks.

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
    plate = video_plate(cfg, subject)
    if plate is not None:
        files.append(plate)
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

    matting, plate = video_matting(cfg, subject)
    # the checkpoint folder lives beside the attempt's (runner): an interrupted track resumes
    rec = track_video(video_path(cfg, subject), asset, out, tracking_config(cfg), cfg.selection(),
                      landmarks=inputs["landmarks"] / "video" / "landmarks.npz", matting=matting, background=plate,
                      checkpoint=checkpoint)
    m = {k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}
    return {**m, "capture": MONOCULAR, "matting": matting, "flagged": rec["flagged"] + rec["no_face"],
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


def video_supervision(export: Path, subject: str, config) -> SupervisionSample:
    """A video identity's decoder supervision from its tracking export: ``config.timesteps``
    frames spread over the tracked ones, one camera (the face crop's), the export's images
    and masks at the crop's size, the export's FLAME parameters (in the cameras' frame) and
    ``config.crops`` conditioning crops (those frames resized to ``config.crop_size``).

    The export's images are VHAP's: composited over white with their mask (the raw crop is
    not kept); the mask says where the head is, as for multi-view supervision.
    ``config.resolution`` and ``config.matting`` do not apply (the masks are the track
    stage's, :func:`video_matting`).

    Raises:
        InputError: an export without frames or masks.
    """
    from PIL import Image

    from pointillist_data.capture.vhap_export import read_vhap_export
    from pointillist_data.flame import FlameParams
    from pointillist_data.store.supervision import SupervisionSample

    frames = sorted((f for f in read_vhap_export(export) if f.camera_index == 0), key=lambda f: f.timestep_index)
    if not frames or frames[0].mask_path is None:
        raise InputError(str(export), "the tracking export holds no frames with masks for the supervision")
    keep = np.unique(np.linspace(0, len(frames) - 1, min(config.timesteps, len(frames))).round().astype(int))
    picked = [frames[int(k)] for k in keep]
    rgb = np.stack([f.image() for f in picked])[:, None]
    mask = np.stack([np.clip(np.round(f.mask() * 255), 0, 255).astype(np.uint8) for f in picked])[:, None]
    n = config.crops
    crop_t = np.linspace(0, len(picked) - 1, n).round().astype(int) if n > 1 else np.array([len(picked) // 2])
    crops = np.stack([np.asarray(Image.fromarray(rgb[t, 0]).resize((config.crop_size, config.crop_size),
                                                                     Image.Resampling.LANCZOS)) for t in crop_t])
    params = FlameParams.concatenate([FlameParams.load(f.flame_param_path) for f in picked])
    params.timestep_id = np.array([f.timestep_id for f in picked])
    cam = picked[0].camera
    return SupervisionSample(subject, rgb, mask, np.asarray(cam.K, np.float64)[None],
                             np.asarray(cam.world_to_cam, np.float64)[None], np.asarray([cam.serial]), params, crops,
                             np.stack([crop_t, np.zeros_like(crop_t)], 1).astype(np.int32))


def run_video_supervise(cfg: PipelineConfig, subject: str, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.store.supervision_build import SupervisionConfig

    from .stage_supervise import supervision_config

    s = video_supervision(inputs["track"] / "export", subject, SupervisionConfig(**supervision_config(cfg)))
    s.save(out / "supervision.npz")
    return {"timesteps": s.num_timesteps, "cameras": s.num_cameras, "image_size": list(s.image_size)}


VIDEO_RUNNERS = {"landmarks": run_video_landmarks, "track": run_video_track, "fit": run_video_fit,
                 "canonicalize": RUNNERS["canonicalize"], "tokenize": run_video_tokenize,
                 "supervise": run_video_supervise}
