"""The per-participant stage graph: landmarks -> track -> fit -> canonicalize -> tokenize.

Each stage is a function ``(ctx, inputs, out_dir) -> metrics`` writing into ``out_dir``.
The runner (:mod:`pipelines.runner`) keys each stage's output folder by the hash of its
inputs and config, skips stages whose record says complete with matching hashes, writes
into a temporary folder that is renamed when the stage is done, and records failures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PipelineConfig", "STAGES", "STAGE_OUTPUTS", "stage_config"]

STAGES = ("landmarks", "track", "fit", "canonicalize", "tokenize", "supervise")
STAGE_OUTPUTS = {  # the files whose checksums go into the record (and the next stage's input hash)
    "landmarks": ["*.npz"],
    "track": ["tracked_flame_params.npz"],
    "fit": ["point_cloud.ply", "flame_param.npz"],
    "canonicalize": ["canonical.npz"],
    "tokenize": ["sample.npz"],
    "supervise": ["supervision.npz"],  # decoder supervision: pipelines/stage_supervise.py
}


@dataclass
class PipelineConfig:
    """Settings of a dataset run (saved as ``run_config.json`` in the output folder).

    Attributes:
        capture: NeRSemble folder (participant folders ``017/`` ...).
        out: output folder (local path or fsspec URL) holding ``work/``, the report and, by
            default, the store.
        participants: participant ids to process.
        sequence: the sequence tracked and fitted per participant.
        store: token store path or URL (default ``<out>/store.zarr``).
        flame: FLAME model file (default: the demo head).
        landmarks: ``mediapipe`` or ``files:<pattern>`` with ``{capture}``, ``{pid}`` (``%03d``)
            and ``{sequence}`` placeholders.
        tracking: :class:`TrackingConfig` fields to override.
        fitting: :class:`FittingConfig` fields to override.
        image_size: side of the square conditioning crop stored per identity.
        tokens_per_shard: tokens per shard of a new store.
        force: stages to redo (with everything downstream).
        deterministic: use PyTorch's deterministic kernels (about 25 % slower on the CPU) so
            that a resumed run reproduces an uninterrupted one bit for bit.
        supervision: :class:`SupervisionConfig` fields to override (decoder supervision).
        supervision_store: supervision store path or URL (default ``<out>/supervision.zarr``).
    """

    capture: str
    out: str
    participants: list[int]
    sequence: str = "EXP-1-head"
    store: str | None = None
    flame: str | None = None
    landmarks: str = "mediapipe"
    tracking: dict[str, Any] = field(default_factory=dict)
    fitting: dict[str, Any] = field(default_factory=dict)
    image_size: int = 128
    tokens_per_shard: int = 1 << 21
    force: list[str] = field(default_factory=list)
    deterministic: bool = True
    supervision: dict[str, Any] = field(default_factory=dict)
    supervision_store: str | None = None

    def __post_init__(self) -> None:
        self.participants = [int(p) for p in self.participants]
        if len(set(self.participants)) != len(self.participants):
            raise ValueError("duplicate participant ids")
        bad = [s for s in self.force if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) to force: {bad} (stages: {', '.join(STAGES)})")
        if not (self.landmarks == "mediapipe" or self.landmarks.startswith("files:")):
            raise ValueError("landmarks must be 'mediapipe' or 'files:<pattern>'")
        self.store = self.store or f"{self.out.rstrip('/')}/store.zarr"
        self.supervision_store = self.supervision_store or f"{self.out.rstrip('/')}/supervision.zarr"

    def to_dict(self) -> dict:
        return asdict(self)


def stage_config(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """The configuration that keys a stage's outputs (with the full dataclass defaults)."""
    if stage == "landmarks":
        return {"detector": cfg.landmarks, "sequence": cfg.sequence}
    if stage == "track":
        from pointillist_data.tracking.config import TrackingConfig

        return TrackingConfig(**cfg.tracking).to_dict()
    if stage == "fit":
        from pointillist_data.fitting.config import FittingConfig

        return FittingConfig(**cfg.fitting).to_dict()
    if stage == "tokenize":
        from pointillist_data.tokens import DEFAULT_BOX

        return {"box": DEFAULT_BOX.to_dict(), "image_size": cfg.image_size}
    if stage == "supervise":
        from .stage_supervise import supervision_config

        return supervision_config(cfg)
    return {"canonical": "zero expression and pose"}


# ---------------------------------------------------------------------------- stages
def run_landmarks(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.capture import NersembleSequence
    from pointillist_data.tracking.landmarks import FileLandmarks, MediaPipeDetector, detect_sequence

    seq = NersembleSequence(cfg.capture, pid, cfg.sequence)
    if cfg.landmarks.startswith("files:"):
        folder = cfg.landmarks[len("files:"):].format(capture=cfg.capture, pid=f"{pid:03d}", sequence=cfg.sequence)
        det, frames = FileLandmarks(folder), {s: None for s in seq.serials}
    else:
        det, frames = MediaPipeDetector(), {s: seq.frames(s) for s in seq.serials}
    written = detect_sequence(frames, det, out)
    if not written:
        raise RuntimeError(f"no landmarks for any camera of participant {pid:03d}")
    return {"cameras": len(written), "missing": sorted(set(seq.serials) - set(written))}


def run_track(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.tracking.config import TrackingConfig
    from pointillist_data.tracking.stage import load_sequence, run_tracking

    data = load_sequence(cfg.capture, pid, cfg.sequence, inputs["landmarks"])
    rec = run_tracking(data, asset, out, TrackingConfig(**cfg.tracking))
    return {**{k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}, "flagged": rec["flagged"]}


def run_fit(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.fitting.config import FittingConfig
    from pointillist_data.fitting.stage import run_fitting

    rec = run_fitting(inputs["track"] / "export", asset, out, FittingConfig(**cfg.fitting))
    m = rec["metrics"]
    return {"psnr_heldout_db": m["heldout"]["psnr"], "ssim_heldout": m["heldout"]["ssim"], "gaussians": m["gaussians"],
            "empty_faces": m["per_face"]["empty_faces"]}


def run_canonicalize(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.canonical import canonicalize
    from pointillist_data.flame import FlameParams
    from pointillist_data.gaussians import read_ply

    fit = inputs["fit"]
    cloud = canonicalize(read_ply(fit / "point_cloud.ply", asset.num_faces), FlameParams.load(fit / "flame_param.npz"),
                         asset)
    cloud.save(out / "canonical.npz")
    return {"points": len(cloud)}


def run_tokenize(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.canonical import CanonicalCloud, to_sample
    from pointillist_data.tokens import DEFAULT_BOX, Vocabulary

    crop = frontal_crop(cfg.capture, pid, cfg.sequence, cfg.image_size)
    s = to_sample(f"{pid:03d}", CanonicalCloud.load(inputs["canonicalize"] / "canonical.npz"), crop, DEFAULT_BOX,
                  Vocabulary(num_faces=asset.num_faces))
    s.save(out / "sample.npz")
    return {"points": s.num_points, "tokens": int(len(s.tokens))}


def run_supervise(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from .stage_supervise import run_supervise as run

    return run(cfg, pid, inputs, out, asset)


RUNNERS = {"landmarks": run_landmarks, "track": run_track, "fit": run_fit, "canonicalize": run_canonicalize,
           "tokenize": run_tokenize, "supervise": run_supervise}


def frontal_crop(capture: str, pid: int, sequence: str, size: int) -> np.ndarray:
    """Conditioning image: frame 0 of the most frontal camera, centre-cropped square, resized."""
    from PIL import Image

    from pointillist_data.capture import NersembleSequence

    seq = NersembleSequence(capture, pid, sequence)
    serial = min(seq.serials, key=lambda s: seq.cameras[s].world_to_cam[2, 2])
    img = seq.frames(serial, [0])[0]
    h, w = img.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR))
