"""Configuration of the fitting stage (GaussianAvatars with the per-face density constraint)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..fileio import JsonConfigMixin

__all__ = ["FittingConfig", "cpu_defaults", "cuda_defaults", "PRESETS"]


@dataclass
class FittingConfig(JsonConfigMixin):
    """GaussianAvatars-style fitting; schedule fractions are of ``iterations``.

    Attributes:
        device: torch device.
        iterations: optimisation steps (one image each). Upstream: 600k.
        sh_degree: SH degree of the colours (0..3).
        ply_sh_degree: SH degree of the written PLY (``None``: ``sh_degree``); higher
            degrees are zero-padded. GaussianAvatars reads a PLY with its ``--sh_degree``
            flag (default 3), which must equal this degree.
        min_per_face: Gaussians each face starts with, and the floor pruning respects
            (paper supplementary D: 4).
        max_per_face: ceiling of clone / split per face (paper: 15).
        allow_empty_faces: a face whose Gaussians are all transparent may become empty
            (10144 faces x 4 > 30k points, so the floor cannot hold on every face).
        densify_from, densify_until, densify_every: densification window and period.
        opacity_reset_every: period of the opacity reset (0 = never).
        grad_threshold: view-space (NDC) gradient threshold of clone / split (upstream 2e-4).
        percent_dense: split instead of clone above this fraction of the head's extent.
        prune_opacity: prune below this opacity (upstream 0.005).
        lr_position_init, lr_position_final: exponentially decayed position learning rate.
        lr_scaling, lr_rotation, lr_opacity, lr_feature: Adam learning rates.
        lambda_l1, lambda_ssim: photometric loss ``lambda_l1 L1 + lambda_ssim (1 - SSIM)``.
        lambda_xyz, threshold_xyz: ``lambda_xyz * relu(|mu_local| - threshold_xyz)``.
        lambda_scale, threshold_scale: ``lambda_scale * relu(exp(s_local) - threshold_scale)``.
        finetune_flame: also optimise per-timestep expression and pose (small learning rate).
        lr_flame: learning rate of that fine-tuning.
        background: background value composited behind masked images and renders.
        image_scale: scale of the training images (<= 1).
        seed: seed of sampling and initialisation.
        log_every: iterations between progress reports.
        checkpoint_every: iterations between checkpoints of the fit (0 = none): a re-run
            (or ``pointillist run`` after an interrupt) continues from the last one and
            ends with what an uninterrupted fit gives (:mod:`pointillist_data.checkpoint`).
            It changes no result, so it is not part of a stage's input hash.
        holdout_every: hold out every ``k``-th timestep of the export's train part (as
            ``val``, never trained on) when the export has one camera (a monocular video:
            no second camera to hold out); 0 = the export's own split.
    """

    device: str = "cpu"
    iterations: int = 500
    sh_degree: int = 0
    ply_sh_degree: int | None = None
    min_per_face: int = 4
    max_per_face: int = 15
    allow_empty_faces: bool = True
    densify_from: float = 0.15
    densify_until: float = 0.75
    densify_every: float = 0.08
    opacity_reset_every: float = 0.4
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    lr_position_init: float = 5e-3
    lr_position_final: float = 5e-5
    lr_scaling: float = 0.017
    lr_rotation: float = 0.001
    lr_opacity: float = 0.05
    lr_feature: float = 0.01
    lambda_l1: float = 0.8
    lambda_ssim: float = 0.2
    lambda_xyz: float = 1e-2
    threshold_xyz: float = 1.0
    lambda_scale: float = 1.0
    threshold_scale: float = 0.6
    finetune_flame: bool = False
    lr_flame: float = 1e-4
    background: float = 1.0
    image_scale: float = 1.0
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100
    holdout_every: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError("FittingConfig.iterations must be >= 1")
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise ValueError(f"FittingConfig.holdout_every must be 0 or >= 2, got {self.holdout_every}")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError("FittingConfig.sh_degree must be in 0..3")
        if self.ply_sh_degree is not None and not self.sh_degree <= self.ply_sh_degree <= 3:
            raise ValueError(f"FittingConfig.ply_sh_degree must be in sh_degree..3 ({self.sh_degree}..3), "
                             f"got {self.ply_sh_degree}")
        if not 1 <= self.min_per_face <= self.max_per_face:
            raise ValueError(f"need 1 <= min_per_face <= max_per_face, got {self.min_per_face}, {self.max_per_face}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith(("lr_", "lambda_", "threshold_")) and v < 0:
                raise ValueError(f"FittingConfig.{f.name} must be >= 0, got {v}")
        for f in ("densify_from", "densify_until", "densify_every", "opacity_reset_every"):
            if not 0 <= getattr(self, f) <= 1:
                raise ValueError(f"FittingConfig.{f} is a fraction of the run in [0, 1]")
        if not 0 < self.image_scale <= 1:
            raise ValueError("FittingConfig.image_scale must be in (0, 1]")
        if not isinstance(self.checkpoint_every, int) or isinstance(self.checkpoint_every, bool) \
                or self.checkpoint_every < 0:
            raise ValueError(f"FittingConfig.checkpoint_every must be an int >= 0 (0 = no checkpoints), "
                             f"got {self.checkpoint_every!r}")

    def steps(self, fraction: float) -> int:
        return int(round(fraction * self.iterations))


def cpu_defaults(**kw) -> FittingConfig:
    """Small CPU run for the demo (hundreds of iterations at 1/20 NeRSemble resolution)."""
    return FittingConfig(**kw)


def cuda_defaults(**kw) -> FittingConfig:
    """Close to upstream GaussianAvatars: 600k iterations, densify from 10k every 2k until
    600k, opacity reset every 60k, feature learning rate 0.0025, SH degree 3."""
    base = dict(device="cuda", iterations=600_000, sh_degree=3, densify_from=10_000 / 600_000,
                densify_until=1.0, densify_every=2_000 / 600_000, opacity_reset_every=0.1, lr_feature=0.0025,
                log_every=1000, checkpoint_every=5000)
    return FittingConfig(**{**base, **kw})


# the budgets of pointillist_data.devices.resolve_device: what --device auto picks
PRESETS = {"cpu": cpu_defaults, "cuda": cuda_defaults}
