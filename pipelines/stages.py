"""The per-participant stage graph: landmarks -> track -> fit -> canonicalize -> tokenize.

Each stage is one function (:func:`landmarks_stage`, :func:`track_stage`, :func:`fit_stage`,
:func:`canonicalize_stage`, :func:`tokenize_stage`) called both by the stage's own command
and, through a small adapter ``(cfg, pid, inputs, out_dir, asset) -> metrics`` in
:data:`RUNNERS`, by ``pointillist run``. The runner (:mod:`pipelines.runner`) keys each stage's output folder by the hash of its
inputs and config, skips stages whose record says complete with matching hashes, writes
into a temporary folder that is renamed when the stage is done, and records failures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from pointillist_data.errors import ConfigError, InputError
from pointillist_data.fileio import build_config
from pointillist_data.progress import NULL_PROGRESS, Progress, track

__all__ = ["PipelineConfig", "Stage", "STAGES", "STAGE_OUTPUTS", "stage_config", "parse_landmark_source",
           "parse_participants", "landmarks_stage", "track_stage", "fit_stage", "canonicalize_stage",
           "tokenize_stage", "shard_stage", "portrait_crop", "frontal_portrait"]


class Stage(str, Enum):
    """The per-participant stages, in order (the choices of ``--until`` and ``--force``)."""

    landmarks = "landmarks"
    track = "track"
    fit = "fit"
    canonicalize = "canonicalize"
    tokenize = "tokenize"


STAGES = tuple(s.value for s in Stage)
STAGE_OUTPUTS = {  # the files whose checksums go into the record (and the next stage's input hash)
    "landmarks": ["*.npz"],
    "track": ["tracked_flame_params_*.npz"],
    "fit": ["point_cloud.ply", "flame_param.npz"],
    "canonicalize": ["canonical.npz"],
    "tokenize": ["sample.npz"],
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
        split: split manifest (``pointillist split``) recorded per sample in the store
            (default: every sample ``train``).
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
    split: str | None = None

    def __post_init__(self) -> None:
        self.participants = [int(p) for p in self.participants]
        if len(set(self.participants)) != len(self.participants):
            raise ConfigError("participants: duplicate participant ids")
        self.force = [Stage(s).value if s in STAGES else s for s in self.force]
        bad = [s for s in self.force if s not in STAGES]
        if bad:
            raise ConfigError(f"force: unknown stage(s) {bad} (stages: {', '.join(STAGES)})")
        parse_landmark_source(self.landmarks)
        self.store = self.store or f"{self.out.rstrip('/')}/store.zarr"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_landmark_source(spec: str) -> tuple[str, str | None]:
    """``"mediapipe"`` -> ``("mediapipe", None)``; ``"files:<pattern>"`` -> ``("files", pattern)``.

    Raises:
        ConfigError: anything else.
    """
    if spec == "mediapipe":
        return "mediapipe", None
    if spec.startswith("files:") and len(spec) > len("files:"):
        return "files", spec[len("files:"):]
    raise ConfigError(f"--landmarks: '{spec}' is not a landmark source (use 'mediapipe' or 'files:<folder pattern>')")


def parse_participants(spec: str, capture: str | Path | None = None) -> list[int]:
    """``"all"`` (every numeric folder of ``capture``) or comma-separated ids ``"17,18"``.

    Raises:
        InputError: a non-numeric id, an empty list, or ``all`` with no participant folders.
    """
    if spec.strip() == "all":
        root = Path(capture) if capture is not None else None
        if root is None or not root.is_dir():
            raise InputError(f"{capture}", "capture folder not found")
        ids = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        if not ids:
            raise InputError(str(capture), "no participant folders (017/, 018/ ...) found")
        return ids
    ids = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            continue
        if not tok.isdigit():
            raise InputError("--participants", f"'{tok}' is not a participant id (expected numbers such as 17,18 or 'all')")
        ids.append(int(tok))
    if not ids:
        raise InputError("--participants", "no participant ids given")
    return ids


def stage_config(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """The configuration that keys a stage's outputs (with the full dataclass defaults)."""
    if stage == "landmarks":
        return {"detector": cfg.landmarks, "sequence": cfg.sequence}
    if stage == "track":
        return tracking_config(cfg).to_dict()
    if stage == "fit":
        return fitting_config(cfg).to_dict()
    if stage == "tokenize":
        from pointillist_data.tokens import DEFAULT_BOX

        return {"box": DEFAULT_BOX.to_dict(), "image_size": cfg.image_size}
    return {"canonical": "zero expression and pose"}


def tracking_config(cfg: PipelineConfig):
    from pointillist_data.tracking.config import TrackingConfig

    return build_config(TrackingConfig, cfg.tracking, "config 'tracking'")


def fitting_config(cfg: PipelineConfig):
    from pointillist_data.fitting.config import FittingConfig

    return build_config(FittingConfig, cfg.fitting, "config 'fitting'")


# ---------------------------------------------------------------------------- stage functions
# One function per stage, called both by `pointillist run` (through RUNNERS) and by the
# stage's own command, so the two can never drift apart.

def landmarks_stage(capture: str | Path, pid: int, sequence: str, out: str | Path, source: str = "mediapipe",
                    progress: Progress | None = None) -> dict:
    """2D landmarks of every camera and frame into ``out/<serial>.npz`` (VHAP's format).

    Args:
        capture: NeRSemble folder; pid: participant id; sequence: sequence name.
        out: landmark folder (``landmark2d/<DETECTOR>``).
        source: ``mediapipe`` or ``files:<folder>`` (``{capture}``, ``{pid}``, ``{sequence}``
            are filled in) holding ``<serial>.npz`` files to validate and copy.
        progress: reporter (one task per camera, advanced per frame).

    Returns:
        ``{"cameras": n, "missing": [serials without landmarks]}``.

    Raises:
        NersembleError / LandmarkError: unreadable capture or landmark files;
        InputError: no camera got landmarks.
    """
    from pointillist_data.capture import NersembleSequence
    from pointillist_data.tracking.landmarks import FileLandmarks, MediaPipeDetector, detect_sequence

    kind, pattern = parse_landmark_source(source)
    seq = NersembleSequence(capture, pid, sequence)
    if kind == "files":
        folder = pattern.format(capture=capture, pid=f"{pid:03d}", sequence=sequence)
        det = FileLandmarks(folder)
    else:
        det = MediaPipeDetector()
    sizes = {s: (seq.cameras[s].width, seq.cameras[s].height) for s in seq.serials}
    written = detect_sequence(seq.serials, seq.frames, det, out, progress or NULL_PROGRESS, sizes)
    if not written:
        raise InputError(seq.where, f"no landmarks for any camera (source {source})")
    return {"cameras": len(written), "missing": sorted(set(seq.serials) - set(written))}


def track_stage(capture: str | Path, pid: int, sequence: str, landmark_dir: str | Path, out: str | Path, asset,
                config=None, progress: Progress | None = None) -> dict:
    """FLAME tracking of one NeRSemble sequence (see :mod:`pointillist_data.tracking.stage`).

    Returns:
        The tracking record (``metrics``, ``flagged``, ``kept``, ``wall_s``).
    """
    from pointillist_data.flame import FlameParams
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.tracking.quality import tracking_quality
    from pointillist_data.tracking.stage import load_sequence, run_tracking

    data = load_sequence(capture, pid, sequence, landmark_dir)
    rec = run_tracking(data, asset, out, config, progress)
    # quality figures for the store's provenance (ground truth exists for synthetic captures only)
    gt = Path(capture) / f"{pid:03d}" / "ground_truth" / sequence / "flame_params.npz"
    rec["metrics"].update(tracking_quality(asset, data.landmarks[rec["kept"]], rec["metrics"]["landmark_error_px_mean"],
                                           FlameParams.load(find_tracked_params(out)), gt if gt.is_file() else None))
    rec["timesteps"] = [str(data.timestep_ids[k]) for k in rec["kept"]] if data.timestep_ids else []
    return rec


def fit_stage(tracking_dir: str | Path, out: str | Path, asset, config=None, progress: Progress | None = None) -> dict:
    """GaussianAvatars-style fitting on a tracking output folder (its ``export/``).

    Returns:
        The fitting record (``metrics`` with ``heldout``, ``gaussians``, ``per_face``).
    """
    from pointillist_data.fitting.stage import run_fitting

    tracking_dir = Path(tracking_dir)
    export = tracking_dir / "export" if (tracking_dir / "export").exists() else tracking_dir
    return run_fitting(export, asset, out, config, progress)


def canonicalize_stage(fit_dir: str | Path, out_file: str | Path, asset) -> dict:
    """The canonical global point cloud of a fitted avatar (``point_cloud.ply`` +
    ``flame_param.npz`` in ``fit_dir``) written to ``out_file``; returns ``{"points": n}``."""
    from pointillist_data.canonical import canonicalize
    from pointillist_data.flame import FlameParams
    from pointillist_data.gaussians import read_ply

    fit_dir = Path(fit_dir)
    cloud = canonicalize(read_ply(fit_dir / "point_cloud.ply", asset.num_faces),
                         FlameParams.load(fit_dir / "flame_param.npz"), asset)
    cloud.save(out_file)
    return {"points": len(cloud)}


def tokenize_stage(canonical_file: str | Path, subject_id: str, portrait: np.ndarray, out_file: str | Path,
                   num_faces: int, box=None, out_of_box: str = "error") -> dict:
    """Quantise a canonical cloud (1024 bins, yzx order, binding tokens; paper section 3.2)
    into ``out_file`` (a store sample).

    Args:
        portrait: ``(S, S, 3)`` uint8 conditioning crop (see :func:`portrait_crop`).
        num_faces: faces of the FLAME model (the binding vocabulary: 10144 with teeth).
        box: quantisation box (default :data:`pointillist_data.tokens.DEFAULT_BOX`).

    Returns:
        ``{"points": n, "tokens": 4n + 8}``.
    """
    from pointillist_data.canonical import CanonicalCloud, to_sample
    from pointillist_data.tokens import DEFAULT_BOX, Vocabulary

    s = to_sample(subject_id, CanonicalCloud.load(canonical_file), portrait, box or DEFAULT_BOX,
                  Vocabulary(num_faces=num_faces), out_of_box)
    s.save(out_file)
    return {"points": s.num_points, "tokens": int(len(s.tokens))}


def shard_stage(samples: list[str | Path], store: str, num_faces: int, box=None, tokens_per_shard: int = 1 << 21,
                points_per_shard: int = 1 << 19, progress: Progress | None = None,
                records: dict[str, dict] | None = None, split: dict | None = None, flame: str | None = None) -> dict:
    """Append tokenized samples (``sample.npz`` files) to a token store, creating it when absent.

    Args:
        samples: sample files, appended in the given order; subjects already in the store
            are skipped (resumed runs).
        store: store path or fsspec URL.
        num_faces: binding vocabulary of a new store (the FLAME model's faces).
        box: quantisation box of a new store (default ``DEFAULT_BOX``); an existing store
            keeps its own.
        tokens_per_shard, points_per_shard: shard sizes of a new store.
        records: ``{subject_id: {stage: record}}`` the provenance is taken from (default: the
            records of a run beside each sample file, :func:`pointillist_data.provenance.records_beside`).
        split: a split manifest (``pointillist split``) giving each sample's ``split``
            (default: every sample ``train``).
        flame: the FLAME model file used (default: as ``resolve_flame_asset`` resolves it).

    Returns:
        ``{"appended", "store", "samples_in_store"}``.
    """
    from pointillist_data.canonical import CANONICAL_PARAMS
    from pointillist_data.provenance import assign_split, flame_identity, records_beside, sample_provenance
    from pointillist_data.store_write import Sample, StoreConfig, TokenStoreWriter
    from pointillist_data.tokens import DEFAULT_BOX, Vocabulary

    progress = progress or NULL_PROGRESS
    loaded = [Sample.load(p) for p in track(samples, "reading samples", progress)]
    if not loaded:
        return {"appended": 0, "store": store, "samples_in_store": None}

    def config() -> StoreConfig:  # only called when the store is (re-)created
        h, wd = loaded[0].image.shape[:2]
        return StoreConfig(box=box or DEFAULT_BOX, vocab=Vocabulary(num_faces=num_faces), canonical=CANONICAL_PARAMS,
                           image_size=(h, wd), tokens_per_shard=tokens_per_shard,
                           tokens_per_chunk=min(1 << 19, tokens_per_shard), points_per_shard=points_per_shard,
                           points_per_chunk=min(1 << 15, points_per_shard))

    fid = flame_identity(flame)
    prov = {s.subject_id: {"split": assign_split(s.subject_id, split),
                           "provenance": sample_provenance(s.subject_id, s.num_points, len(s.tokens),
                                                           (records or {}).get(s.subject_id) or records_beside(p), fid)}
            for s, p in zip(loaded, samples, strict=True)}
    w = TokenStoreWriter.open_or_create(store, config)
    with progress.task(f"appending {len(loaded)} sample(s) to {store}", total=1) as t:
        n = w.append(loaded, skip_existing=True, annotations=prov)
        t.advance()
    return {"appended": n, "store": store, "samples_in_store": w.num_samples}


def portrait_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The conditioning crop: the centred square of ``image (H, W, C)`` resized to
    ``(size, size, 3)`` uint8 (bilinear; aspect kept, never stretched; grey and RGBA
    converted to RGB)."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    img = img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, -1)
    if img.dtype != np.uint8:
        img = np.clip(np.asarray(img, np.float64) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR))


def frontal_portrait(capture: str | Path, pid: int, sequence: str, size: int) -> np.ndarray:
    """Conditioning image of a participant: frame 0 of the most frontal camera, through
    :func:`portrait_crop`."""
    from pointillist_data.capture import NersembleSequence

    seq = NersembleSequence(capture, pid, sequence)
    serial = min(seq.serials, key=lambda s: seq.cameras[s].world_to_cam[2, 2])
    return portrait_crop(seq.frames(serial, [0])[0], size)


# ---------------------------------------------------------------------------- run adapters
def run_landmarks(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    return landmarks_stage(cfg.capture, pid, cfg.sequence, out, cfg.landmarks)


def run_track(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    rec = track_stage(cfg.capture, pid, cfg.sequence, inputs["landmarks"], out, asset, tracking_config(cfg))
    return {**{k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}, "flagged": rec["flagged"],
            "timesteps": rec["timesteps"]}


def run_fit(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    m = fit_stage(inputs["track"], out, asset, fitting_config(cfg))["metrics"]
    return {"psnr_heldout_db": m["heldout"]["psnr"], "ssim_heldout": m["heldout"]["ssim"], "gaussians": m["gaussians"],
            "empty_faces": m["per_face"]["empty_faces"], "per_face_histogram": m["per_face"]["histogram"]}


def run_canonicalize(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    return canonicalize_stage(inputs["fit"], out / "canonical.npz", asset)


def run_tokenize(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    crop = frontal_portrait(cfg.capture, pid, cfg.sequence, cfg.image_size)
    return tokenize_stage(inputs["canonicalize"] / "canonical.npz", f"{pid:03d}", crop, out / "sample.npz",
                          asset.num_faces)


RUNNERS = {"landmarks": run_landmarks, "track": run_track, "fit": run_fit, "canonicalize": run_canonicalize,
           "tokenize": run_tokenize}
