"""One config dataclass per data-stage command (``landmarks``, ``track``, ``fit``,
``canonicalize``, ``tokenize``, ``supervise``, ``shard``): its inputs, outputs and settings,
whose documented fields are the command's flags (:mod:`pipelines.config_cli`).

``track``, ``fit`` and ``supervise`` extend the stage's own config (:class:`TrackingConfig`,
:class:`FittingConfig`, :class:`SupervisionConfig`), so that a JSON file of that config is
still a valid ``--config`` and every stage setting is a flag (``--global-iters``,
``--iterations``); :meth:`TrackJob.tracking` and :meth:`FitJob.fitting` give back the stage
config the stage function takes. Importable without torch (the command line builds its
options at start-up); errors raised here name the field, which the command line turns into
the flag that set it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from pointillist_data.fitting.config import FittingConfig
from pointillist_data.portrait import PORTRAIT_SIZE
from pointillist_data.store.supervision_config import SupervisionConfig
from pointillist_data.tracking.config import TrackingConfig

from .options import SelectionFields, check_crop

__all__ = ["DEVICES", "DETECTORS", "LandmarksJob", "TrackJob", "FitJob", "CanonicalizeJob", "TokenizeJob",
           "ShardJob", "SuperviseJob", "parse_box"]

#: ``--device`` of ``track`` and ``fit`` (``cuda:N`` in a ``--config`` file)
DEVICES = ("auto", "cpu", "cuda")
#: landmark sources of ``landmarks``
DETECTORS = ("mediapipe", "files")


def _device():
    return field(default="auto", metadata={"choices": DEVICES})


def parse_box(box: str):
    """``default`` or ``x0,y0,z0,x1,y1,z1`` (metres) -> :class:`~pointillist_data.tokens.QuantBox`.

    Raises:
        ValueError: anything else (naming the field ``box``).
    """
    from pointillist_data.tokens import DEFAULT_BOX, QuantBox

    if box == "default":
        return DEFAULT_BOX
    try:
        v = [float(x) for x in str(box).split(",")]
    except ValueError:
        v = []
    if len(v) != 6:
        raise ValueError(f"box: needs 'default' or 6 numbers x0,y0,z0,x1,y1,z1 (metres), got '{box}'")
    try:
        return QuantBox(tuple(v[:3]), tuple(v[3:]))
    except ValueError as e:
        raise ValueError(f"box: {e}") from None


@dataclass(kw_only=True)
class LandmarksJob(SelectionFields):
    """``pointillist landmarks``: 2D landmarks of a participant's selected sequences.

    Attributes:
        capture: NeRSemble folder.
        participant: participant id.
        out: folder for ``<sequence>/<serial>.npz`` (``landmark2d/<DETECTOR>``).
        detector: ``mediapipe`` (face detector, then the face mesh on a crop), or ``files``:
            landmark files already on disk (``from_dir``, the flag ``--from``).
        from_dir: folder of ``<serial>.npz`` for ``files`` (``{capture}``, ``{pid}``,
            ``{sequence}`` are filled in); ``--from`` for short.
        crop: ``x0,y0,x1,y1``: pixels of the videos where the face detector looks (for small
            faces in large frames).
    """

    capture: str
    participant: int
    out: str
    detector: str = field(default="mediapipe", metadata={"choices": DETECTORS})
    from_dir: str | None = field(default=None, metadata={"aliases": ("--from",)})
    crop: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.detector not in DETECTORS:
            raise ValueError(f"detector: '{self.detector}' is not one of {', '.join(DETECTORS)}")
        if self.detector == "files" and not self.from_dir:
            raise ValueError("from_dir: required with detector 'files'")
        check_crop(self.crop)

    def source(self) -> str:
        """The landmark source of :func:`pipelines.stages.landmarks_stage`."""
        return f"files:{self.from_dir}" if self.detector == "files" else "mediapipe"


@dataclass(kw_only=True)
class TrackJob(SelectionFields, TrackingConfig):
    """``pointillist track``: FLAME tracking of a participant's sequences, a monocular video
    or one portrait; every :class:`TrackingConfig` field over the device's preset.

    Attributes:
        out: output folder.
        capture: NeRSemble folder (with ``participant`` and ``landmarks``).
        participant: participant id.
        landmarks: landmark folder (``<sequence>/<serial>.npz``, or ``<serial>.npz`` for one
            sequence) or, with ``video``, one npz (VHAP format: x/w, y/h).
        video: track a monocular video instead.
        image: fit a single portrait (PNG/JPG; grey and RGBA are converted) instead.
        focal: focal length guess (pixels) for ``video``.
        crop: ``x0,y0,x1,y1``: pixels of the video / image where the face detector looks.
        device: ``auto`` (CUDA with the CUDA preset when torch sees a GPU, else the CPU
            budget), ``cpu`` or ``cuda`` (``cuda:N`` in a ``--config`` file); the preset of the
            device sets the fields the file and the flags leave alone.
    """

    out: str
    capture: str | None = None
    participant: int | None = None
    landmarks: str | None = None
    video: str | None = None
    image: str | None = None
    focal: float | None = None
    crop: list[float] | None = None
    device: str = _device()

    def __post_init__(self) -> None:
        TrackingConfig.__post_init__(self)
        SelectionFields.__post_init__(self)
        check_crop(self.crop)
        if self.video is not None and self.image is not None:
            raise ValueError("video / image: give one of them")
        if self.video is None and self.image is None:
            missing = [n for n in ("capture", "participant", "landmarks") if getattr(self, n) is None]
            if missing:
                raise ValueError(" / ".join(missing) + ": required (or give a video or an image)")
        if self.focal is not None and self.focal <= 0:
            raise ValueError(f"focal: {self.focal} is not a focal length > 0 (pixels)")

    def tracking(self, device: str) -> TrackingConfig:
        """The :class:`TrackingConfig` part, on the resolved ``device``."""
        return TrackingConfig(**{**{f.name: getattr(self, f.name) for f in fields(TrackingConfig)}, "device": device})


@dataclass(kw_only=True)
class FitJob(SelectionFields, FittingConfig):
    """``pointillist fit``: GaussianAvatars-style fitting on a tracking output; every
    :class:`FittingConfig` field over the device's preset.

    Attributes:
        tracking: tracking output folder (holding ``export/``).
        out: output folder.
        device: ``auto`` (CUDA with the CUDA preset when torch sees a GPU, else the CPU
            budget), ``cpu`` or ``cuda`` (``cuda:N`` in a ``--config`` file); the preset of the
            device (``--cuda-preset``: the CUDA one) sets the fields the file and the flags
            leave alone.
    """

    tracking: str
    out: str
    device: str = _device()

    def __post_init__(self) -> None:
        FittingConfig.__post_init__(self)
        SelectionFields.__post_init__(self)

    def fitting(self, device: str) -> FittingConfig:
        """The :class:`FittingConfig` part, on the resolved ``device``."""
        return FittingConfig(**{**{f.name: getattr(self, f.name) for f in fields(FittingConfig)}, "device": device})


@dataclass(kw_only=True)
class CanonicalizeJob:
    """``pointillist canonicalize``: the canonical point cloud of a fitted avatar.

    Attributes:
        fit: fitting output folder (``point_cloud.ply`` + ``flame_param.npz``).
        out: ``canonical.npz`` to write.
    """

    fit: str
    out: str

    def __post_init__(self) -> None:
        if not str(self.out).strip():
            raise ValueError("out: empty path")


@dataclass(kw_only=True)
class TokenizeJob(SelectionFields):
    """``pointillist tokenize``: a canonical cloud as a store sample, with its conditioning crop.

    Attributes:
        canonical: ``canonical.npz`` from ``canonicalize``.
        subject: subject id (participant id).
        out: ``sample.npz`` to write.
        image: portrait (PNG/JPG) for the conditioning crop.
        capture: or: NeRSemble folder; the crop is frame 0 of the most frontal camera of the
            first sequence, as ``run`` takes it.
        participant: participant id (with ``capture``).
        box: quantisation box: ``default`` or ``x0,y0,z0,x1,y1,z1`` (metres).
        clamp: clamp points outside the box (with a counted warning) instead of failing.
        image_size: side of the square conditioning crop (pixels, >= 8).
    """

    canonical: str
    subject: str
    out: str
    image: str | None = None
    capture: str | None = None
    participant: int | None = None
    box: str = "default"
    clamp: bool = False
    image_size: int = PORTRAIT_SIZE

    def __post_init__(self) -> None:
        super().__post_init__()
        self.subject = str(self.subject)
        if self.image is None and (self.capture is None or self.participant is None):
            raise ValueError("image: give a portrait, or capture and participant for the frontal crop")
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size: {self.image_size!r} is not an int >= 8")
        parse_box(self.box)


@dataclass(kw_only=True)
class ShardJob:
    """``pointillist shard``: tokenized samples appended to a token store.

    Attributes:
        out: store path or fsspec URL (``s3://...``).
        box: quantisation box of a new store: ``default`` or ``x0,y0,z0,x1,y1,z1`` (metres).
        tokens_per_shard: tokens per shard of a new store (>= 4096).
        points_per_shard: rows per shard of the per-point arrays of a new store (>= 1024).
        split: split manifest (``pointillist split``) giving each sample's split (default:
            train).
    """

    out: str
    box: str = "default"
    tokens_per_shard: int = 1 << 21
    points_per_shard: int = 1 << 19
    split: str | None = None

    def __post_init__(self) -> None:
        if self.tokens_per_shard < 4096:
            raise ValueError(f"tokens_per_shard: {self.tokens_per_shard} is below 4096")
        if self.points_per_shard < 1024:
            raise ValueError(f"points_per_shard: {self.points_per_shard} is below 1024")
        parse_box(self.box)


@dataclass(kw_only=True)
class SuperviseJob(SupervisionConfig):
    """``pointillist supervise``: one tracked identity's decoder supervision (views, masks,
    cameras, FLAME parameters, crops); every :class:`SupervisionConfig` field.

    Attributes:
        capture: NeRSemble folder.
        participant: participant id.
        tracking: tracking output folder (``tracked_flame_params_<epoch>.npz``).
        out: ``supervision.npz`` to write.
        sequences: the sequences tracked together (names or prefixes, ``all``, ``union``);
            default: those of the tracking record, else as ``track`` resolves them.
    """

    capture: str
    participant: int
    tracking: str
    out: str
    sequences: list[str] | None = field(default=None, metadata={"aliases": ("--sequence",)})

    def __post_init__(self) -> None:
        super().__post_init__()

    def supervision(self) -> SupervisionConfig:
        """The :class:`SupervisionConfig` part."""
        return SupervisionConfig(**{f.name: getattr(self, f.name) for f in fields(SupervisionConfig)})
