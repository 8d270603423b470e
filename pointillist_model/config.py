"""Configs of the model jobs (``train-ar``, ``train-decoder``, ``generate-points``, ``avatar``,
``evaluate``), importable without torch so that the command line can build its options from
them at start-up (:mod:`pipelines.config_cli`); validation that needs the networks' presets
imports them when a config is made.

Each is one dataclass whose documented fields are the command's flags; ``__post_init__``
validates them (errors name the field) and the config is saved beside the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pointillist_data.errors import InputError
from pointillist_data.fileio import JsonConfigMixin
from pointillist_data.portrait import SOURCE_MODES
from pointillist_data.view_config import ViewSettings

__all__ = ["GRAPH_MODES", "ANIMATION_MODES", "POINT_MODES", "MODEL_PRESETS", "POINT_SOURCES", "INPUTS",
           "SamplingConfig", "CloudCheckConfig", "GenerateConfig", "AvatarConfig", "EvalConfig", "OptimizationConfig", "TrainConfig",
           "DecoderTrainConfig", "MODEL_BUDGETS", "auto_model_preset"]

#: Decode-step execution modes of :func:`pointillist_model.generate.sample_points`.
GRAPH_MODES = ("auto", "eager", "cuda_graph", "compile")
#: Animation of bound Gaussians (:data:`pointillist_data.animation.MODES`; a test keeps them equal).
ANIMATION_MODES = ("barycentric", "face_frame")
#: Where ``evaluate``'s avatars get their points: AR sampling from the source, or the stored cloud.
POINT_MODES = ("generated", "stored")
#: Model presets of both trainers (``auto``: ``paper`` on CUDA, ``tiny`` otherwise; a test keeps
#: them equal to :data:`pointillist_model.ar.PRESETS` and :data:`pointillist_model.decoder.DECODER_PRESETS`).
MODEL_PRESETS = ("auto", "paper", "tiny")
#: Where the decoder's points come from: the AR model, or the canonical FLAME vertices (ablation).
POINT_SOURCES = ("ar", "flame")
#: Decoder inputs (paper Table 2): P and F, P only, F only.
INPUTS = ("both", "position", "feature")
#: The budget (:mod:`pointillist_data.devices`) of each model preset.
MODEL_BUDGETS = {"paper": "cuda", "tiny": "cpu"}


def auto_model_preset(preset: str, device: str) -> str:
    """The model preset ``auto`` stands for: ``paper`` where ``device`` resolves to CUDA
    (:func:`pointillist_data.devices.resolve_device`), ``tiny`` on the CPU; any other
    ``preset`` is returned as it is. Never raises: a CUDA device asked for where there is
    none gives ``paper``, and :class:`~pointillist_model.trainer_base.BaseTrainer` then refuses it."""
    if preset != "auto":
        return preset
    from pointillist_data.devices import resolve_device  # torch: only when a config is made

    try:
        budget = resolve_device(device).preset
    except InputError:
        budget = "cuda" if str(device).startswith("cuda") else "cpu"
    return "paper" if budget == "cuda" else "tiny"


@dataclass(kw_only=True)
class SamplingConfig(JsonConfigMixin):
    """The sampling settings every command that generates points shares (``generate-points``,
    ``avatar``, ``evaluate``); each command's config adds its own fields and calls
    ``super().__post_init__()``.

    Attributes:
        max_points, min_points: cloud size limits (``end`` forced at ``max_points``, forbidden
            before ``min_points``).
        temperature: softmax temperature of the next-token distribution (> 0).
        top_k: sample among the k most likely tokens only (``None``: all).
        top_p: nucleus sampling: the smallest set of tokens with this much probability
            (``None``: all).
        seed: seeds the sampling generator.
        device: torch device: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        InputError: ``1 <= min_points <= max_points``, ``temperature > 0``, ``top_k >= 1``
        or ``0 < top_p <= 1`` violated.
    """

    max_points: int = 30000
    min_points: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = 0.95
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.max_points < 1 or not 1 <= self.min_points <= self.max_points:
            raise InputError("max_points / min_points", f"need 1 <= min_points <= max_points, got "
                             f"min_points={self.min_points}, max_points={self.max_points}")
        if self.temperature <= 0 or (self.top_k is not None and self.top_k < 1) \
                or (self.top_p is not None and not 0 < self.top_p <= 1):
            raise InputError("temperature / top_k / top_p", f"need temperature > 0, top_k >= 1 and "
                             f"0 < top_p <= 1, got {self.temperature}, {self.top_k}, {self.top_p}")


@dataclass(kw_only=True)
class CloudCheckConfig(SamplingConfig):
    """The sampling settings plus when a generated cloud counts as degenerate (a one-line
    warning from ``generate-points`` and ``avatar``, and a banner on the avatar's turntable;
    :func:`pointillist_model.cloud_check.degenerate_cloud`).

    Attributes:
        degenerate_min_points: a cloud with fewer points than this is degenerate (the
            synthetic capture's ground truths hold about 50k-130k Gaussians).
        degenerate_outside_fraction: a cloud with more than this fraction of its points outside
            the FLAME template's box grown by ``degenerate_margin`` is degenerate (0..1).
        degenerate_margin: metres the template's bounding box grows by on every side before
            points count as outside (room for hair).

    Raises:
        InputError: ``degenerate_min_points < 0``, a fraction outside 0..1 or a negative margin.
    """

    degenerate_min_points: int = 1000
    degenerate_outside_fraction: float = 0.5
    degenerate_margin: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.degenerate_min_points < 0:
            raise InputError("degenerate_min_points", f"must be >= 0, got {self.degenerate_min_points}")
        if not 0 <= self.degenerate_outside_fraction <= 1:
            raise InputError("degenerate_outside_fraction", f"must be in 0..1, got {self.degenerate_outside_fraction}")
        if self.degenerate_margin < 0:
            raise InputError("degenerate_margin", f"must be >= 0 metres, got {self.degenerate_margin}")

    def degenerate(self, points, template) -> str | None:
        """:func:`~pointillist_model.cloud_check.degenerate_cloud` with these thresholds:
        ``points (N, 3)`` and FLAME ``template (V, 3)`` in metres, canonical frame."""
        from .cloud_check import degenerate_cloud

        return degenerate_cloud(points, template, self.degenerate_min_points, self.degenerate_outside_fraction,
                                self.degenerate_margin)


@dataclass
class GenerateConfig(CloudCheckConfig):
    """Settings of ``pointillist generate-points`` (saved as ``generate_config.json``).

    Attributes:
        num: avatars generated for the portrait.
        batch_size: avatars decoded together (default: all ``num``).
        num_threads: CPU threads while decoding: a number, ``auto`` (one thread for one avatar
            at a time, torch's setting for batches) or ``null`` (torch's setting).
        graph: decode-step execution: ``auto`` (CUDA graphs on CUDA; on the CPU ``compile``
            from 40000 tokens in all, avatars x 4 x max points, else ``eager``), ``eager``,
            ``cuda_graph``, ``compile``.
        max_points, min_points, temperature, top_k, top_p, seed, device: see
            :class:`SamplingConfig`.
    """

    num: int = 1
    batch_size: int | None = None
    num_threads: int | str | None = "auto"
    graph: str = field(default="auto", metadata={"choices": GRAPH_MODES})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.num_threads is None or self.num_threads == "auto"
                or (isinstance(self.num_threads, int) and self.num_threads >= 1)):
            raise InputError("num_threads", f"must be >= 1, null or 'auto', got {self.num_threads!r}")
        if self.graph not in GRAPH_MODES:
            raise InputError("graph", f"must be one of {', '.join(GRAPH_MODES)}, got {self.graph!r}")
        if self.num < 1:
            raise InputError("num", f"need num >= 1, got num={self.num}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError("batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class AvatarConfig(CloudCheckConfig, ViewSettings):
    """Settings of ``pointillist avatar`` (saved beside its outputs).

    Attributes:
        turntable_frames: frames of the turntable (one full circle).
        animation: ``barycentric`` or ``face_frame``; ``None`` = the decoder's training mode.
        size, fov_deg, fps, background: the views, see :class:`~pointillist_data.view_config.ViewSettings`.
        max_points, min_points, temperature, top_k, top_p, seed, device: AR sampling, see
            :class:`SamplingConfig`.
    """

    turntable_frames: int = 36
    animation: str | None = field(default=None, metadata={"choices": ANIMATION_MODES})

    def __post_init__(self) -> None:
        CloudCheckConfig.__post_init__(self)
        self.check_view()
        if self.turntable_frames < 1:
            raise InputError("turntable_frames", f"must be >= 1, got {self.turntable_frames}")
        if self.animation is not None and self.animation not in ANIMATION_MODES:
            raise InputError("animation", f"must be one of {ANIMATION_MODES}, got '{self.animation}'")


@dataclass
class EvalConfig(SamplingConfig):
    """Settings of ``pointillist evaluate`` (saved in the results).

    Attributes:
        store: token store (path or URL).
        supervision: its supervision store (default: ``supervision.zarr`` beside it).
        decoder: decoder checkpoint (``train-decoder``).
        ar: AR checkpoint (default: the one the decoder names).
        out: output folder.
        split: split manifest (JSON, ``manifests/`` schema ``split``); its ``test`` identities are
            evaluated. ``None``: the token store's ``test`` split when it records one, else every
            identity in both stores (recorded as such).
        allow_seen: score identities the checkpoints (decoder, or the AR model it was trained
            with) record as trained on, or checkpoints that record nothing; the report then
            names them as seen. Default: refuse
            (:func:`pointillist_model.evaluate.seen_in_training`).
        points: ``generated`` (AR sampling from the source, the paper's protocol) or ``stored``.
        cameras: serials of the evaluation cameras; ``None``: the decoder's held-out cameras,
            else every camera.
        driver: subject id of the cross-reenactment driver; ``None``: drawn with the seed.
        max_timesteps: at most this many driving timesteps per identity (evenly spaced).
        metrics: metric names (``psnr ssim lpips fid akd apd clip``); ``None``: PSNR, SSIM, and
            AKD / APD when MediaPipe is installed, plus each network metric whose weights are given.
        lpips_weights, inception_weights, clip_weights: local weights of the network metrics.
        render_scale: render and compare at this fraction of the stored view size.
        feature_cache: AR feature cache of ``points="stored"`` (default ``<out>/ar_features``;
            the decoder run's ``ar_features`` is reused when given).
        animation: ``barycentric`` / ``face_frame``; ``None``: the decoder's training mode.
        strip_frames: frames per identity in the picture strips.
        seed: seeds AR sampling and the protocol's choices (driver, timesteps).
        max_points, min_points, temperature, top_k, top_p, device: AR sampling
            (``points="generated"``), see :class:`SamplingConfig`.
    """

    store: str
    decoder: str
    out: str
    supervision: str | None = None
    ar: str | None = None
    split: str | None = None
    points: str = field(default="generated", metadata={"choices": POINT_MODES})
    cameras: list[str] | None = None
    driver: str | None = None
    max_timesteps: int | None = None
    metrics: list[str] | None = None
    lpips_weights: str | None = None
    inception_weights: str | None = None
    clip_weights: str | None = None
    render_scale: float = 1.0
    feature_cache: str | None = None
    animation: str | None = field(default=None, metadata={"choices": ANIMATION_MODES})
    strip_frames: int = 4
    allow_seen: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.points not in POINT_MODES:
            raise InputError("points", f"must be one of {POINT_MODES}, got '{self.points}'")
        if not 0 < self.render_scale <= 1:
            raise InputError("render_scale", f"must be in (0, 1], got {self.render_scale}")
        if self.animation is not None and self.animation not in ANIMATION_MODES:
            raise InputError("animation", f"must be one of {ANIMATION_MODES}, got '{self.animation}'")
        if self.max_timesteps is not None and self.max_timesteps < 1:
            raise InputError("max_timesteps", "must be >= 1")
        if self.supervision is None:
            self.supervision = str(Path(self.store.rstrip("/")).parent / "supervision.zarr")


@dataclass(kw_only=True)
class OptimizationConfig(JsonConfigMixin):
    """The settings every trainer shares (what :class:`BaseTrainer` reads); each trainer's
    config adds its own fields (``out`` among them) and calls ``super().__post_init__()``.

    Attributes:
        steps: optimisation steps.
        lr: peak AdamW learning rate (the paper's 1e-4).
        weight_decay: AdamW weight decay of the parameters with two or more dimensions (matrices,
            embeddings); biases and norm gains get none.
        warmup: linear warm-up steps, then cosine decay to ``min_lr_ratio * lr`` at ``steps``.
        min_lr_ratio: the final learning rate over the peak, in [0, 1].
        grad_clip: gradient-norm clip (> 0).
        seed: seeds initialisation and every random draw of the run.
        ckpt_every, log_every: checkpoint and log periods (steps, >= 1).
        device: ``auto`` (CUDA when available) or a torch device (``cpu``, ``cuda``, ``cuda:1``).

    Raises:
        ValueError: a value outside the ranges above (:func:`~pointillist_data.fileio.build_config`
        turns it into a one-line ``ConfigError``).
    """

    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.ckpt_every < 1 or self.log_every < 1:
            raise ValueError(f"steps, ckpt_every and log_every must be >= 1, got {self.steps}, {self.ckpt_every}, "
                             f"{self.log_every}")
        if self.lr < 0 or self.weight_decay < 0 or self.warmup < 0:
            raise ValueError(f"lr, weight_decay and warmup must be >= 0, got {self.lr}, {self.weight_decay}, {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.device != "auto":
            import torch  # deferred: the command line builds its options from this module

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ValueError(f"device must be 'auto' or a torch device (cpu, cuda, cuda:1), got '{self.device}'") \
                    from None


@dataclass
class TrainConfig(OptimizationConfig):
    """Training settings (saved beside the checkpoints).

    Attributes:
        store: token store path or URL.
        out: folder for checkpoints and logs.
        preset: model preset (``paper``, which needs CUDA, or ``tiny``; ``auto``: ``paper``
            where ``device`` resolves to CUDA, else ``tiny``).
        model: fields of :class:`~pointillist_model.ar.ARConfig` that override the preset's
            (a JSON object, e.g. ``{"depth": 4}``).
        window, stride: training windows (tokens); default the model's ``max_seq_len``.
        batch_size: windows per step (per rank).
        num_workers: DataLoader workers.
        split: train on the samples of this split only (default ``train``: never the ``test``
            identities ``evaluate`` scores); ``all``: every sample, test identities included.
        where: train on the samples matching this filter only (:mod:`pointillist_data.store.query`,
            e.g. ``"psnr >= 28"``).
        source_images: the conditioning image of each training window: ``portrait`` (the
            token store's one portrait per identity) or ``views`` (drawn at random from
            several timesteps and near-frontal cameras of the identity in the supervision
            store, as one-shot avatar models train;
            :mod:`pointillist_data.store.source_images`).
        supervision: supervision store read by ``views`` (default: ``supervision.zarr``
            beside the store).
        source_frames: stored timesteps per identity drawn from with ``views``, evenly spread
            over those not held out (default: all).
        source_cameras: the most frontal cameras per identity drawn from with ``views``.
        source_holdout: with ``views``, the last this many stored timesteps of each identity
            are never drawn (recorded in the checkpoint: source frames never used in training).
        steps, lr, weight_decay, warmup, min_lr_ratio, grad_clip, seed, ckpt_every,
            log_every, device: see :class:`OptimizationConfig`
            (the seed also orders the loader's windows and draws the source views).
    """

    store: str
    out: str
    preset: str = field(default="auto", metadata={"choices": MODEL_PRESETS})
    model: dict = field(default_factory=dict)
    window: int | None = None
    stride: int | None = None
    batch_size: int = 4
    num_workers: int = 0
    split: str = "train"
    where: str | None = None
    source_images: str = field(default="portrait", metadata={"choices": SOURCE_MODES})
    supervision: str | None = None
    source_frames: int | None = None
    source_cameras: int = 3
    source_holdout: int = 1

    def __post_init__(self) -> None:
        from .ar import PRESETS

        super().__post_init__()
        if not self.split:
            raise ValueError("split must name a split (train, test, unassigned) or be 'all'")
        self.preset = auto_model_preset(self.preset, self.device)  # auto: paper on CUDA, tiny on the CPU
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset '{self.preset}' (have {sorted(PRESETS)})")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {self.batch_size}, {self.num_workers}")
        if self.source_images not in SOURCE_MODES:
            raise ValueError(f"source_images must be one of {SOURCE_MODES}, got '{self.source_images}'")
        if self.source_cameras < 1 or self.source_holdout < 1 or (self.source_frames is not None
                                                                  and self.source_frames < 1):
            raise ValueError(f"source_frames, source_cameras and source_holdout must be >= 1, got {self.source_frames}, "
                             f"{self.source_cameras}, {self.source_holdout}")
        if self.source_images == "views" and self.supervision is None:
            self.supervision = str(Path(self.store.rstrip("/")).parent / "supervision.zarr")

    def model_config(self):
        """The :class:`~pointillist_model.ar.ARConfig` of the preset with ``model`` on top."""
        from .ar import PRESETS, ARConfig

        return ARConfig(**{**PRESETS[self.preset].to_dict(), **self.model})


@dataclass
class DecoderTrainConfig(OptimizationConfig):
    """Decoder training settings (saved beside the checkpoints).

    Attributes:
        store: token store (path or URL).
        supervision: its supervision store (default: ``supervision.zarr`` beside it).
        ar_checkpoint: the frozen AR model.
        out: folder for checkpoints, logs and (by default) the AR feature cache.
        preset: decoder preset (``paper``, which needs CUDA, or ``tiny``; ``auto``: ``paper``
            where ``device`` resolves to CUDA, else ``tiny``).
        model: fields of :class:`~pointillist_model.decoder.DecoderConfig` that override the
            preset's (a JSON object).
        points: ``ar`` (the stored, teacher-forced points) or ``flame`` (canonical FLAME
            vertices: the paper's "FLAME position" ablation; needs ``inputs="position"``).
        inputs: ``both``, ``position`` (P only) or ``feature`` (F only), the paper's Table 2.
        batch_size: identities per step (per rank).
        cameras_per_step: views of the sampled timestep rendered per identity.
        points_per_step: a random subset of each identity's points per step (``None``: all).
        crops: conditioning crops per identity: 1 = the token store's portrait, more adds the
            supervision store's crops (each cached separately: disk grows with it).
        holdout_serials: cameras never trained on (for held-out evaluation).
        animation: ``barycentric`` (paper 4.3) or ``face_frame`` (GaussianAvatars).
        background: grey level the views are composited over and rendered against.
        render_scale: render at this fraction of the stored view size (<= 1).
        w_l1, w_ssim, w_lpips, w_offset: loss weights (paper: 1.0, 0.5, 0.1, 0.1).
        lpips_weights: local VGG16 LPIPS weights (needed when ``w_lpips > 0``).
        window, stride: teacher-forcing windows (default the AR model's ``max_seq_len`` and half).
        split: train on the identities of this split of the token store only (default
            ``train``: never the ``test`` identities ``evaluate`` scores); ``all``: every one.
        where: train on the identities matching this filter only (:mod:`pointillist_data.store.query`).
        cache_dir: AR feature cache (default ``<out>/ar_features``).
        render_every: render the held-out views (prediction | ground truth, PSNR per tile) into
            ``heldout.png`` and ``renders/step_<N>.png`` every this many steps and at the end
            (0: never); the mean PSNR is logged as ``heldout_psnr``.
        steps, lr, weight_decay, warmup, min_lr_ratio, grad_clip, seed, ckpt_every,
            log_every, device: see :class:`OptimizationConfig`
            (the seed also draws the identities, timesteps, cameras and points).
        deterministic: PyTorch's deterministic kernels (the renderer's index accumulation is
            otherwise order-dependent on several threads), so a resumed run reproduces an
            uninterrupted one bit for bit.
    """

    store: str
    ar_checkpoint: str
    out: str
    supervision: str | None = None
    preset: str = field(default="auto", metadata={"choices": MODEL_PRESETS})
    model: dict = field(default_factory=dict)
    points: str = field(default="ar", metadata={"choices": POINT_SOURCES})
    inputs: str = field(default="both", metadata={"choices": INPUTS})
    batch_size: int = 1
    cameras_per_step: int = 2
    points_per_step: int | None = None
    crops: int = 1
    holdout_serials: list[str] = field(default_factory=list)
    animation: str = field(default="barycentric", metadata={"choices": ANIMATION_MODES})
    background: float = 1.0
    render_scale: float = 1.0
    w_l1: float = 1.0
    w_ssim: float = 0.5
    w_lpips: float = 0.1
    w_offset: float = 0.1
    lpips_weights: str | None = None
    window: int | None = None
    stride: int | None = None
    cache_dir: str | None = None
    render_every: int = 500
    deterministic: bool = True
    split: str = "train"
    where: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.supervision is None:
            self.supervision = str(Path(self.store.rstrip("/")).parent / "supervision.zarr")
        self.preset = auto_model_preset(self.preset, self.device)  # auto: paper on CUDA, tiny on the CPU
        if self.preset not in MODEL_PRESETS[1:]:
            raise InputError("--preset", f"unknown decoder preset '{self.preset}' (have {', '.join(MODEL_PRESETS)})")
        if self.points not in POINT_SOURCES:
            raise InputError("--points", f"must be one of {POINT_SOURCES}, got '{self.points}'")
        if self.inputs not in INPUTS:
            raise InputError("--inputs", f"must be one of {INPUTS}, got '{self.inputs}'")
        if self.points == "flame" and self.inputs != "position":
            raise InputError("--points", "FLAME vertices carry no AR features: use --inputs position with them")
        if self.animation not in ANIMATION_MODES:
            raise InputError("--animation", f"must be one of {ANIMATION_MODES}, got '{self.animation}'")
        if not self.split:
            raise InputError("--split", "must name a split (train, test, unassigned) or be 'all'")
        if self.batch_size < 1 or self.cameras_per_step < 1 or self.crops < 1:
            raise InputError("decoder training", "batch_size, cameras_per_step and crops must be >= 1")
        if self.points_per_step is not None and self.points_per_step < 1:
            raise InputError("--points-per-step", "must be >= 1")
        if self.render_every < 0:
            raise InputError("--render-every", f"must be >= 0 (0: never), got {self.render_every}")
        if not 0 < self.render_scale <= 1:
            raise InputError("--render-scale", f"must be in (0, 1], got {self.render_scale}")
        if min(self.w_l1, self.w_ssim, self.w_lpips, self.w_offset) < 0:
            raise InputError("loss weights", "must be >= 0")
        if self.w_lpips > 0 and not self.lpips_weights:
            raise InputError("--lpips-weights", f"the LPIPS weight is {self.w_lpips} but no local LPIPS weights were "
                             "given", "pass --lpips-weights PATH (torchvision vgg16 + lpips vgg.pth, or a state "
                             "dict), or --w-lpips 0; nothing is downloaded")
