"""The config of ``pointillist experiment`` (``make experiment``, issue 30): the held-out
identities experiment, importable without torch (the command line builds its flags from it).

The recipe itself is :mod:`pipelines.experiment`; the claims it evaluates are
:mod:`pointillist_model.claims`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pointillist_data.fitting.config import FittingConfig
from pointillist_data.tracking.config import TrackingConfig

__all__ = ["ExperimentConfig", "DECODER_VARIANTS", "EXPERIMENT_TRACKING", "EXPERIMENT_FITTING"]

#: The decoder variants of the ablation (paper section 5.4, Table 2 / Figure 5): AR features
#: and positional encoding, either alone, and FLAME vertex positions.
DECODER_VARIANTS = ("both", "position", "feature", "flame")

# The recipe's reduced stage budgets: the demo's (pipelines.demo: 1.63 mm mean tracking error,
# 29.3 dB held-out fitting PSNR on the demo capture at about 60 % of the stage defaults' time).
EXPERIMENT_TRACKING = {"first_frame_iters": 250, "frame_iters": 100, "global_iters": 50}
EXPERIMENT_FITTING = {"iterations": 300}


@dataclass
class ExperimentConfig:
    """``pointillist experiment``: synthetic identities -> recorded split -> the dataset run ->
    train-ar -> train-decoder variants -> claims on the test identities (saved as
    ``experiment_config.json`` in ``out``; each step's part of it is hashed into its done-marker).

    Attributes:
        out: experiment folder (``capture/``, ``split.json``, ``run/``, ``ar/``,
            ``decoder_<variant>/``, ``claims/``, ``steps/`` done-markers).
        identities: synthetic identities rendered (``demo-capture --identities``).
        capture: an existing synthetic capture folder (``demo-capture``'s, with ``capture.json``)
            to use instead of rendering one; it must hold ``identities`` participants.
        n_test: identities held out as the test split (never trained on).
        seed: seed of the capture, the split draw, training and evaluation.
        timesteps: frames per identity of the synthetic capture.
        workers: dask worker processes of the dataset run (``None``: one per core, at most one
            per identity).
        tracking: :class:`TrackingConfig` fields over the CPU preset (the recipe's reduced budget).
        fitting: :class:`FittingConfig` fields over the CPU preset (the recipe's reduced budget).
        ar_steps: optimisation steps of the AR model (tiny preset).
        ar_batch_size: windows per AR step.
        ar_window: tokens per AR training window (a multiple of 4).
        ar_lr: peak learning rate of the AR model.
        ar_model: fields of the AR model config over the tiny preset (a JSON object).
        nll_every: the claim-(a) NLL probe (true / shuffled / no conditioning, train and test
            windows) every this many AR steps and at the end (0: only at the end).
        nll_windows: windows per identity scored by the NLL probe.
        decoder_steps: optimisation steps of each decoder variant (tiny preset).
        decoder_points_per_step: a random subset of each identity's points per decoder step
            (``None``: all, about 45k per identity at the recipe's fitting budget).
        decoder_variants: the ablation's variants, among ``both``, ``position``, ``feature``
            and ``flame`` (FLAME vertex positions).
        max_points: most points generated per test identity (the generated cloud's cap).
        eval_timesteps: driving timesteps per identity in self- and cross-reenactment.
        eval_render_scale: reenactment renders at this fraction of the stored view size.
        lpips_weights: local VGG16 LPIPS weights; with them the reenactment rows add LPIPS
            (nothing is downloaded).
        device: torch device of training and evaluation (``cpu``; ``cuda`` where there is one).
        flame: FLAME model file (default: the demo head).
    """

    out: str = "out/experiment"
    identities: int = 48
    capture: str | None = None
    n_test: int = 8
    seed: int = 0
    timesteps: int = 4
    workers: int | None = None
    tracking: dict[str, Any] = field(default_factory=lambda: dict(EXPERIMENT_TRACKING),
                                     metadata={"overrides": TrackingConfig})
    fitting: dict[str, Any] = field(default_factory=lambda: dict(EXPERIMENT_FITTING),
                                    metadata={"overrides": FittingConfig})
    ar_steps: int = 2000
    ar_batch_size: int = 4
    ar_window: int = 1024
    ar_lr: float = 1e-3
    ar_model: dict[str, Any] = field(default_factory=dict)
    nll_every: int = 500
    nll_windows: int = 4
    decoder_steps: int = 200
    decoder_points_per_step: int | None = 8192
    decoder_variants: list[str] = field(default_factory=lambda: list(DECODER_VARIANTS))
    max_points: int = 4000
    eval_timesteps: int = 2
    eval_render_scale: float = 0.5
    lpips_weights: str | None = None
    device: str = "cpu"
    flame: str | None = None

    def __post_init__(self) -> None:
        if self.identities < 2:
            raise ValueError(f"identities: need at least 2 (one to train on, one to test), got {self.identities}")
        if not 1 <= self.n_test < self.identities:
            raise ValueError(f"n_test: need 1 <= n_test < identities ({self.identities}), got {self.n_test}")
        for n in ("timesteps", "ar_steps", "ar_batch_size", "nll_windows", "decoder_steps", "max_points",
                  "eval_timesteps"):
            if getattr(self, n) < 1:
                raise ValueError(f"{n}: must be >= 1, got {getattr(self, n)}")
        if self.decoder_points_per_step is not None and self.decoder_points_per_step < 1:
            raise ValueError(f"decoder_points_per_step: must be >= 1, got {self.decoder_points_per_step}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.ar_window < 8 or self.ar_window % 4:
            raise ValueError(f"ar_window: must be a multiple of 4 and >= 8, got {self.ar_window}")
        if self.nll_every < 0:
            raise ValueError(f"nll_every: must be >= 0, got {self.nll_every}")
        if not self.ar_lr > 0:
            raise ValueError(f"ar_lr: must be > 0, got {self.ar_lr}")
        bad = [v for v in self.decoder_variants if v not in DECODER_VARIANTS]
        if bad or not self.decoder_variants or len(set(self.decoder_variants)) != len(self.decoder_variants):
            raise ValueError(f"decoder_variants: need distinct names among {', '.join(DECODER_VARIANTS)}, "
                             f"got {self.decoder_variants}")
        if not 0 < self.eval_render_scale <= 1:
            raise ValueError(f"eval_render_scale: must be in (0, 1], got {self.eval_render_scale}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device: '{self.device}' is not cpu, cuda or cuda:N")
        from pointillist_data.fileio import build_config

        for name, cls in (("tracking", TrackingConfig), ("fitting", FittingConfig)):
            build_config(cls, getattr(self, name), f"'{name}'")  # a typo fails here, not in a worker

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
