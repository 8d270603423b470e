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

from pointillist_data.capture.selection import CaptureSelection, resolve_sequences
from pointillist_data.errors import ConfigError, InputError
from pointillist_data.fileio import build_config
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.pictures import LandmarkSheet, canonical_png, tokens_png
from pointillist_data.portrait import PORTRAIT_SIZE, frontal_portrait
from pointillist_data.progress import NULL_PROGRESS, Progress, track
from pointillist_data.tracking.config import TrackingConfig

from .stage_supervise import run_supervise, supervision_config

__all__ = ["PipelineConfig", "Stage", "STAGES", "STAGE_OUTPUTS", "stage_config", "parse_landmark_source",
           "parse_participants", "resolve_sequences", "stage_plans", "landmarks_stage", "track_stage", "fit_stage",
           "canonicalize_stage", "tokenize_stage", "shard_stage"]


class Stage(str, Enum):
    """The per-participant stages, in order (the choices of ``--until`` and ``--force``)."""

    landmarks = "landmarks"
    track = "track"
    fit = "fit"
    canonicalize = "canonicalize"
    tokenize = "tokenize"
    supervise = "supervise"  # decoder supervision: pipelines/stage_supervise.py


STAGES = tuple(s.value for s in Stage)
VIDEO_HOLDOUT_EVERY = 4  # run --videos: every 4th frame of the fit's train part is held out (FittingConfig.holdout_every)
STAGE_OUTPUTS = {  # the files whose checksums go into the record (and the next stage's input hash)
    "landmarks": ["*/*.npz"],
    "track": ["tracked_flame_params_*.npz"],
    "fit": ["point_cloud.ply", "flame_param.npz"],
    "canonicalize": ["canonical.npz"],
    "tokenize": ["sample.npz"],
    "supervise": ["supervision.npz"],  # decoder supervision: pipelines/stage_supervise.py
}


@dataclass
class PipelineConfig:
    """Settings of a dataset run (saved as ``run_config.json`` in the output folder).

    Attributes:
        out: output folder (local path or fsspec URL) holding ``work/``, the report and, by
            default, the store.
        capture: NeRSemble folder (participant folders ``017/`` ...); exactly one of
            ``capture`` and ``videos`` is given.
        videos: folder of monocular videos (``*.mp4``, ``*.mov``, ``*.mkv``, ``*.avi``,
            ``*.webm``), each one identity whose subject id is the file stem
            (:mod:`pipelines.stages_monocular`): tracked on a face crop, fitted with every
            ``fitting.holdout_every``-th frame (default 4) held out, ``capture`` kind ``monocular``.
            ``participants`` is then the stems found, ``landmarks`` ``mediapipe`` or
            ``files:<pattern>`` naming one VHAP landmark npz per video (``{subject}``
            placeholder); the frames are matted (``matting``; default ``background`` where
            ``<stem>_background.png`` sits beside the video, else ``mediapipe``) and the
            supervise stage writes one camera per video.
        participants: participant ids to process: a list, comma-separated ids (``17,18``) or
            ``all`` (every numeric folder of ``capture``).
        sequences: the sequences tracked together and fitted on their union, per participant
            (names, prefixes, ``all`` or ``union``; default: GaussianAvatars' union sequences
            present, else every sequence present; see :mod:`pointillist_data.capture.selection`).
        scale: frame scale, a fraction of 2200 x 3208 (default 1/4: 550 x 802).
        frames: frames of each sequence (``all``, ``start:stop[:step]`` or a list).
        cameras: camera serials or indices (default all).
        store: token store path or URL (default ``<out>/store.zarr``).
        flame: FLAME model file (default: the demo head).
        landmarks: ``mediapipe`` or ``files:<pattern>`` with ``{capture}``, ``{pid}`` (``%03d``)
            and ``{sequence}`` placeholders.
        tracking: :class:`TrackingConfig` fields set over the device's preset.
        fitting: :class:`FittingConfig` fields set over the device's preset.
        image_size: side of the square conditioning crop stored per identity (pixels; 512
            feeds DINOv2 at 224-518 px without upsampling).
        tokens_per_shard: tokens per shard of a new store.
        force: stages to redo (with everything downstream).
        deterministic: use PyTorch's deterministic kernels (about 25 % slower on the CPU) so
            that a resumed run reproduces an uninterrupted one bit for bit.
        supervision: :class:`SupervisionConfig` fields to override (decoder supervision).
        supervision_store: supervision store path or URL (default ``<out>/supervision.zarr``).
        split: split manifest (``pointillist split``) recorded per sample in the store
            (default: every sample ``train``).
        device: ``auto`` (CUDA with the CUDA presets of tracking and fitting when torch sees
            a CUDA device, else the CPU budgets), ``cpu`` or ``cuda``; a ``device`` inside
            ``tracking`` / ``fitting`` wins for that stage (:mod:`pointillist_data.devices`).
        crop: ``x0,y0,x1,y1`` pixels of the videos where the MediaPipe face detector looks
            (for small faces in large frames; default the whole frame).
        matting: how the ``track`` and ``supervise`` stages make masks when the capture has
            no ``alpha_maps/``: ``threshold``, ``background``, ``mediapipe``,
            ``rvm:<weights.pth>`` or ``bgmv2:<weights.pth>``
            (:mod:`pointillist_data.capture.matting`); default: each stage's own (``threshold``);
            a ``matting`` inside ``tracking`` / ``supervision`` wins for that stage. With
            ``videos``: the masks of the track stage, used by every later stage.
    """

    out: str
    capture: str | None = None
    videos: str | None = None
    participants: list[int] | str = field(default="all", metadata={"cli_kind": "str"})
    sequences: list[str] | None = field(default=None, metadata={"aliases": ("--sequence",)})
    scale: float | None = field(default=None, metadata={"cli_kind": "str"})  # 1/4 or 0.25
    frames: str = "all"
    cameras: list[str] | None = None
    store: str | None = None
    flame: str | None = None
    landmarks: str = "mediapipe"
    tracking: dict[str, Any] = field(default_factory=dict, metadata={"overrides": TrackingConfig})
    fitting: dict[str, Any] = field(default_factory=dict, metadata={"overrides": FittingConfig})
    image_size: int = PORTRAIT_SIZE
    tokens_per_shard: int = 1 << 21
    force: list[str] = field(default_factory=list)
    deterministic: bool = True
    supervision: dict[str, Any] = field(default_factory=dict)
    supervision_store: str | None = None
    split: str | None = None
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})  # cuda:N: in --config
    crop: list[float] | None = None
    matting: str | None = None

    def __post_init__(self) -> None:
        # ConfigError naming the field: the command line names the flag, or the --config file, that set it
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"device: '{self.device}' is not auto, cpu, cuda or cuda:N")
        if (self.capture is None) == (self.videos is None):
            raise ConfigError("capture / videos: give exactly one (--capture for NeRSemble, --videos for monocular videos)")
        if self.videos is not None:
            from pointillist_data.capture.video_folder import video_subjects

            self.participants = video_subjects(self.videos, self.participants)
        elif isinstance(self.participants, str):
            if self.participants.strip() == "all" and "://" not in self.capture and not Path(self.capture).is_dir():
                raise InputError(f"--capture {self.capture}", "capture folder not found")
            self.participants = parse_participants(self.participants, self.capture)
        if self.videos is None:
            self.participants = [int(p) for p in ([self.participants] if isinstance(self.participants, int)
                                                  else self.participants)]
        if len(set(self.participants)) != len(self.participants):
            raise ConfigError("participants: duplicate participant ids")
        self.force = [Stage(s).value if s in STAGES else s for s in self.force]
        bad = [s for s in self.force if s not in STAGES]
        if bad:
            raise ConfigError(f"force: unknown stage(s) {bad} (stages: {', '.join(STAGES)})")
        parse_landmark_source(self.landmarks)
        if self.matting is not None:
            from pointillist_data.capture.matting import parse_matting

            parse_matting(self.matting)
        for name, cls in (("tracking", TrackingConfig), ("fitting", FittingConfig)):
            build_config(cls, getattr(self, name), f"'{name}'")  # a typo fails here, not in every worker
        if self.crop is not None:
            self.crop = [float(v) for v in self.crop]
            if len(self.crop) != 4 or self.crop[2] <= self.crop[0] or self.crop[3] <= self.crop[1] or min(self.crop) < 0:
                raise ConfigError(f"crop: {self.crop} is not x0,y0,x1,y1 pixels with x0 < x1 and y0 < y1")
        sel = self.selection()
        self.sequences, self.scale, self.frames, self.cameras = sel.sequences, sel.scale, sel.frames, sel.cameras
        self.store = self.store or f"{self.out.rstrip('/')}/store.zarr"
        self.supervision_store = self.supervision_store or f"{self.out.rstrip('/')}/supervision.zarr"

    def to_dict(self) -> dict:
        return asdict(self)

    def selection(self) -> CaptureSelection:
        """The scale, frames, cameras and sequences every stage reads."""
        return CaptureSelection(self.scale, self.frames, self.cameras, self.sequences)


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
    sel = cfg.selection().to_dict()
    if stage == "landmarks" and cfg.videos is not None:
        return {"detector": cfg.landmarks, "selection": sel, "video": True, **({"crop": cfg.crop} if cfg.crop else {})}
    if stage == "landmarks":  # crop only when set, so that runs without one keep their keys
        return {"detector": cfg.landmarks, "selection": sel, **({"crop": cfg.crop} if cfg.crop else {})}
    # the checkpoint interval changes no result: runs that differ in it share their outputs
    if stage == "track" and cfg.videos is not None:  # per video: the plate (in the input hash) picks it
        return {**_without_checkpoint(tracking_config(cfg).to_dict()), "selection": sel,
                "matting": cfg.tracking.get("matting") or cfg.matting or "background with a plate, else mediapipe"}
    if stage == "track":
        return {**_without_checkpoint(tracking_config(cfg).to_dict()), "selection": sel}
    if stage == "fit":
        return _without_checkpoint(fitting_config(cfg).to_dict())
    if stage == "tokenize":
        from pointillist_data.tokens import DEFAULT_BOX

        return {"box": DEFAULT_BOX.to_dict(), "image_size": cfg.image_size, "selection": sel,
                **({"portrait": "first face crop"} if cfg.videos is not None else {})}
    if stage == "supervise":
        return supervision_config(cfg)
    return {"canonical": "zero expression and pose"}


def _without_checkpoint(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "checkpoint_every"}


def tracking_config(cfg: PipelineConfig):
    """The run's TrackingConfig: the preset of the resolved device with ``cfg.tracking`` on top."""
    from pointillist_data.devices import preset_config
    from pointillist_data.tracking.config import PRESETS, TrackingConfig

    over = {"matting": cfg.matting, **cfg.tracking} if getattr(cfg, "matting", None) else cfg.tracking
    return preset_config(TrackingConfig, PRESETS, over, cfg.device, where="config 'tracking'")[0]


def fitting_config(cfg: PipelineConfig):
    """The run's FittingConfig: the preset of the resolved device with ``cfg.fitting`` on top."""
    from pointillist_data.devices import preset_config
    from pointillist_data.fitting.config import PRESETS, FittingConfig

    over = cfg.fitting
    if cfg.videos is not None:  # one camera: hold out frames (pipelines.stages_monocular)
        over = {"holdout_every": VIDEO_HOLDOUT_EVERY, **over}
    return preset_config(FittingConfig, PRESETS, over, cfg.device, where="config 'fitting'")[0]


def stage_plans(cfg: PipelineConfig) -> dict[str, Any]:
    """``{stage: {"device", "preset"}}`` of every stage, and ``"warnings"``: the lines to show
    (a CPU budget on a machine with CUDA). Tracking and fitting follow ``cfg.device`` (or the
    ``device`` of their overrides); the other stages always run on the CPU budget.

    Raises:
        InputError: a CUDA device where torch sees no CUDA device.
    """
    from pointillist_data.devices import resolve_device

    plans: dict[str, Any] = {s: {"device": "cpu", "preset": "cpu"} for s in STAGES}
    warnings: list[str] = []
    for stage, name in (("track", "tracking"), ("fit", "fitting")):
        section = getattr(cfg, name)
        where = f"config '{name}': device" if "device" in section else "--device"
        plan = resolve_device(section.get("device", cfg.device), where=where)
        plans[stage] = plan.to_dict()
        if plan.warning and plan.warning not in warnings:
            warnings.append(plan.warning)
    plans["warnings"] = warnings
    return plans


# ---------------------------------------------------------------------------- stage functions
# One function per stage, called both by `pointillist run` (through RUNNERS) and by the
# stage's own command, so the two can never drift apart.

def landmarks_stage(capture: str | Path, pid: int, out: str | Path, selection: CaptureSelection | None = None,
                    source: str = "mediapipe", crop: tuple[float, float, float, float] | None = None,
                    progress: Progress | None = None) -> dict:
    """2D landmarks of every selected sequence, camera and frame into
    ``out/<sequence>/<serial>.npz`` (VHAP's format: coordinates normalised by the image
    size, so valid at any scale), detected on the frames read at the selection's scale,
    decoding one frame at a time.

    Args:
        capture: NeRSemble folder; pid: participant id.
        out: landmark folder (``landmark2d/<DETECTOR>``).
        selection: scale, frames, cameras and sequences (default: see :class:`CaptureSelection`).
        source: ``mediapipe`` or ``files:<folder>`` (``{capture}``, ``{pid}``, ``{sequence}``
            are filled in) holding VHAP ``<serial>.npz`` files over each whole video
            (normalised, or pixels of the video marked ``coordinate_units = "pixels"``) to
            validate and subset.
        crop: ``(x0, y0, x1, y1)`` pixels of the videos where MediaPipe looks for the face.
        progress: reporter (one task per camera, advanced per frame).

    Returns:
        ``{"sequences", "cameras": n, "frames": per sequence, "missing": [serials without
        landmarks], "no_face": [one line per camera naming its video and the frames],
        "camera_frames": n, "no_face_frames": n}``; ``out/<sequence>/landmarks.png`` shows
        a camera x frame grid with the detected points and the frames without a face marked
        (:class:`pointillist_data.pictures.LandmarkSheet`).

    Raises:
        NersembleError / LandmarkError: unreadable capture or landmark files;
        InputError: no camera got landmarks, or no frame of any camera shows a face (the
        hint suggests ``--scale`` / ``--crop``).
    """
    from pointillist_data.capture import NersembleSequence
    from pointillist_data.capture.selection import DEFAULT_NERSEMBLE_SCALE
    from pointillist_data.tracking.landmarks import (
        NO_FACE_HINT,
        FileLandmarks,
        MediaPipeDetector,
        detect_sequence,
    )

    kind, pattern = parse_landmark_source(source)
    sel = selection or CaptureSelection()
    seqs = resolve_sequences(capture, pid, sel)
    result = {"sequences": seqs, "cameras": 0, "frames": {}, "missing": [], "no_face": [], "camera_frames": 0,
              "no_face_frames": 0}
    found = 0
    where = f"participant {int(pid):03d}"
    for name in seqs:
        seq = NersembleSequence(capture, pid, name, scale=sel.effective_scale(DEFAULT_NERSEMBLE_SCALE))
        serials = sel.camera_serials(seq.serials, seq.where)
        frames = sel.frame_indices(seq.num_frames)
        vw, vh = seq.video_size(serials[0])
        W, H = seq.image_size
        sheet = LandmarkSheet(f"participant {int(pid):03d} {name}: landmarks at {W}x{H}")
        if kind == "files":
            det = FileLandmarks(pattern.format(capture=capture, pid=f"{pid:03d}", sequence=name))
        else:  # the picture's frames are kept as they are detected on: no second decode
            det = sheet.recording(MediaPipeDetector(crop=None if crop is None else (
                crop[0] * W / vw, crop[1] * H / vh, crop[2] * W / vw, crop[3] * H / vh)))
        s = detect_sequence(serials, lambda serial, q=seq, f=frames, sh=sheet: sh.watch(serial, q.iter_frames(serial, f),
                                                                                              len(f)), det,
                            Path(out) / name, progress or NULL_PROGRESS,
                            {x: seq.video_size(x) for x in serials}, frames)
        if kind == "files":
            sheet.fill_from_files(seq, frames, s, progress)
        if s.written:
            sheet.save(Path(out) / name / "landmarks.png")
        result["cameras"] = max(result["cameras"], len(s.written))
        result["frames"][name] = len(frames)
        result["missing"] += [f"{name}/{x}" for x in serials if x not in s.written]
        result["no_face"] += s.flags(lambda serial, q=seq: str(q.video_path(serial)))
        result["camera_frames"] += len(s.written) * s.frames
        result["no_face_frames"] += s.frames * len(s.written) - s.faces_found
        found += s.faces_found
    if not result["cameras"]:
        raise InputError(where, f"no landmarks for any camera (source {source})")
    if found == 0:
        raise InputError(where, f"no face found in any frame of any camera of {', '.join(seqs)} "
                         f"({sel.describe()})", hint=NO_FACE_HINT)
    return result


def track_stage(capture: str | Path, pid: int, landmark_dir: str | Path, out: str | Path, asset,
                config=None, selection: CaptureSelection | None = None, progress: Progress | None = None,
                plan: dict | None = None, checkpoint: str | Path | None = None) -> dict:
    """FLAME tracking of a participant's selected sequences, together: one identity shape and
    static offset over the union of their frames (see :mod:`pointillist_data.tracking.stage`).
    Frames are decoded once into a disk cache inside ``out`` (removed when done).

    Args:
        plan: ``{"device", "preset"}`` the config was resolved with (:mod:`pointillist_data.devices`),
            copied into the record.
        checkpoint: folder of the tracker's checkpoint (default ``out/checkpoint``, see
            :func:`pointillist_data.tracking.stage.run_tracking`).

    Returns:
        The tracking record (``metrics``, ``flagged``, ``kept``, ``wall_s``, ``sequences``,
        ``selection``, and ``device`` / ``preset`` when ``plan`` is given).
    """
    from pointillist_data.capture.synthetic import capture_kind
    from pointillist_data.flame import FlameParams
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.tracking.quality import tracking_quality
    from pointillist_data.tracking.stage import load_sequence, run_tracking

    sel = selection or CaptureSelection()
    seqs = resolve_sequences(capture, pid, sel)
    data = load_sequence(capture, pid, seqs, landmark_dir, selection=sel, cache=out, progress=progress,
                         matting=getattr(config, "matting", "threshold"))
    try:
        rec = run_tracking(data, asset, out, config, progress, {"sequences": seqs, "selection": sel.to_dict(),
                                                                **(plan or {})}, checkpoint)
        # quality figures for the store's provenance (ground truth exists for synthetic captures only)
        gt = Path(capture) / f"{pid:03d}" / "ground_truth" / seqs[0] / "flame_params.npz"
        rec["metrics"].update(tracking_quality(asset, data.landmarks[rec["kept"]], rec["metrics"]["landmark_error_px_mean"],
                                               FlameParams.load(find_tracked_params(out)),
                                               gt if len(seqs) == 1 and gt.is_file() else None))
        rec["timesteps"] = [str(data.timestep_ids[k]) for k in rec["kept"]] if data.timestep_ids else []
        rec["metrics"]["capture"] = capture_kind(capture)  # the dataset card's licence terms follow it
        return rec
    finally:
        data.close()


def fit_stage(tracking_dir: str | Path, out: str | Path, asset, config=None, selection: CaptureSelection | None = None,
              progress: Progress | None = None, plan: dict | None = None,
              checkpoint: str | Path | None = None) -> dict:
    """GaussianAvatars-style fitting on a tracking output folder (its ``export/``): over the
    union of the timesteps of every sequence tracked (or those ``selection`` keeps).

    Args:
        plan: ``{"device", "preset"}`` the config was resolved with, copied into the record.
        checkpoint: folder of the fit's checkpoint (default ``out/checkpoint``; a re-run resumes
            from it, see :func:`pointillist_data.fitting.stage.run_fitting`).

    Returns:
        The fitting record (``metrics`` with ``heldout``, ``gaussians``, ``per_face``;
        ``sequences``; ``device`` / ``preset`` when ``plan`` is given).
    """
    from pointillist_data.fitting.stage import run_fitting

    tracking_dir = Path(tracking_dir)
    export = tracking_dir / "export" if (tracking_dir / "export").exists() else tracking_dir
    return run_fitting(export, asset, out, config, progress, selection, plan, checkpoint)


def canonicalize_stage(fit_dir: str | Path, out_file: str | Path, asset) -> dict:
    """The canonical global point cloud of a fitted avatar (``point_cloud.ply`` +
    ``flame_param.npz`` in ``fit_dir``) written to ``out_file``, and its picture coloured by
    binding region beside it (``<out_file stem>.png``, :func:`pointillist_data.pictures.canonical_png`);
    returns ``{"points": n}``."""
    from pointillist_data.canonical import canonicalize
    from pointillist_data.flame import FlameParams
    from pointillist_data.gaussians import read_ply

    fit_dir = Path(fit_dir)
    cloud = canonicalize(read_ply(fit_dir / "point_cloud.ply", asset.num_faces),
                         FlameParams.load(fit_dir / "flame_param.npz"), asset)
    cloud.save(out_file)
    canonical_png(cloud.points, cloud.binding, asset, Path(out_file).with_suffix(".png"))
    return {"points": len(cloud)}


def tokenize_stage(canonical_file: str | Path, subject_id: str, portrait: np.ndarray, out_file: str | Path,
                   num_faces: int, box=None, out_of_box: str = "error", sequences: list[str] | None = None) -> dict:
    """Quantise a canonical cloud (1024 bins, yzx order, binding tokens; paper section 3.2)
    into ``out_file`` (a store sample).

    Args:
        portrait: ``(S, S, 3)`` uint8 conditioning crop (see :func:`pointillist_data.portrait.portrait_crop`).
        num_faces: faces of the FLAME model (the binding vocabulary: 10144 with teeth).
        box: quantisation box (default :data:`pointillist_data.tokens.DEFAULT_BOX`).
        sequences: the sequences the avatar was fitted on (listed by the store's manifest).

    Returns:
        ``{"points": n, "tokens": 4n + 8}``; the token and points-per-face histograms are
        written beside ``out_file`` (``<stem>_tokens.png``, :func:`pointillist_data.pictures.tokens_png`).
    """
    from pointillist_data.canonical import CanonicalCloud, to_sample
    from pointillist_data.tokens import DEFAULT_BOX, Vocabulary

    s = to_sample(subject_id, CanonicalCloud.load(canonical_file), portrait, box or DEFAULT_BOX,
                  Vocabulary(num_faces=num_faces), out_of_box)
    s.sequences = list(sequences or [])
    s.save(out_file)
    out_file = Path(out_file)
    tokens_png(s.tokens, num_faces, out_file.with_name(f"{out_file.stem}_tokens.png"), title=subject_id)
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
    from pointillist_data.store.write import Sample, StoreConfig, TokenStoreWriter
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


# ---------------------------------------------------------------------------- run adapters
def run_landmarks(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    return landmarks_stage(cfg.capture, pid, out, cfg.selection(), cfg.landmarks,
                           None if cfg.crop is None else tuple(cfg.crop))


def run_track(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset,
              checkpoint: Path | None = None) -> dict:
    rec = track_stage(cfg.capture, pid, inputs["landmarks"], out, asset, tracking_config(cfg), cfg.selection(),
                      plan=stage_plans(cfg)["track"], checkpoint=checkpoint)
    return {**{k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}, "flagged": rec["flagged"],
            "sequences": rec["sequences"], "timesteps": rec["timesteps"]}


def run_fit(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset,
            checkpoint: Path | None = None) -> dict:
    rec = fit_stage(inputs["track"], out, asset, fitting_config(cfg), plan=stage_plans(cfg)["fit"],
                    checkpoint=checkpoint)
    m = rec["metrics"]
    return {"psnr_heldout_db": m["heldout"]["psnr"], "ssim_heldout": m["heldout"]["ssim"], "gaussians": m["gaussians"],
            "empty_faces": m["per_face"]["empty_faces"], "sequences": rec["sequences"], "timesteps": rec["timesteps"],
            "per_face_histogram": m["per_face"]["histogram"], "resumed_from": rec["resumed_from"]}


def run_canonicalize(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    return canonicalize_stage(inputs["fit"], out / "canonical.npz", asset)


def run_tokenize(cfg: PipelineConfig, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    sel = cfg.selection()
    seqs = resolve_sequences(cfg.capture, pid, sel)
    crop = frontal_portrait(cfg.capture, pid, seqs[0], cfg.image_size, sel)
    return tokenize_stage(inputs["canonicalize"] / "canonical.npz", f"{pid:03d}", crop, out / "sample.npz",
                          asset.num_faces, sequences=seqs)


CHECKPOINTED = ("track", "fit")  # stages whose runner takes a checkpoint folder that outlives an attempt
RUNNERS = {"landmarks": run_landmarks, "track": run_track, "fit": run_fit, "canonicalize": run_canonicalize,
           "tokenize": run_tokenize, "supervise": run_supervise}
