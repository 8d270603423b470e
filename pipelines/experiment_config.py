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
from pointillist_model.config import DecoderTrainConfig, TrainConfig

__all__ = ["ExperimentConfig", "DECODER_VARIANTS", "EXPERIMENT_TRACKING", "EXPERIMENT_FITTING", "EXPERIMENT_AR",
           "EXPERIMENT_DECODER", "RECIPE_OWNED"]

#: The decoder variants of the ablation (paper section 5.4, Table 2 / Figure 5): AR features
#: and positional encoding, either alone, and FLAME vertex positions.
DECODER_VARIANTS = ("both", "position", "feature", "flame")

# The recipe's reduced stage budgets: the demo's (pipelines.demo), at about 60 % of the stage
# defaults' time: 1.17 / 1.14 / 1.68 mm mean tracking error on identities 900 / 901 / 902 with the
# first frame's Levenberg-Marquardt refinement (BENCHMARKS.md), 29.3 dB held-out fitting PSNR.
EXPERIMENT_TRACKING = {"first_frame_iters": 250, "frame_iters": 100, "global_iters": 50}
EXPERIMENT_FITTING = {"iterations": 300}
# The recipe's training budgets over the tiny preset (train-ar / train-decoder flags); the
# decoder's window follows the AR model's unless set. The AR model draws each window's source
# image from the identity's supervision views (issue 30 item 5): the last stored timestep of every
# train identity is never drawn, so the claims can condition on a source frame never trained on.
EXPERIMENT_AR = {"steps": 2000, "batch_size": 4, "window": 1024, "lr": 1e-3, "source_images": "views"}
EXPERIMENT_DECODER = {"steps": 200, "points_per_step": 8192, "lr": 3e-3, "w_lpips": 0.0, "cameras_per_step": 1,
                      "render_scale": 0.5}
#: Fields the recipe sets itself (its stores, folders, split and held-out camera): an override
#: of one could let a test identity reach training, so it is refused.
RECIPE_OWNED = ("store", "out", "supervision", "ar_checkpoint", "split", "holdout_serials", "cache_dir", "preset",
                "points", "inputs", "seed", "device")


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
        ar: ``train-ar`` fields (:class:`~pointillist_model.config.TrainConfig`) over the tiny preset
            and the recipe's budget (steps 2000, batch 4, window 1024, lr 1e-3, source images drawn
            from the supervision views with the last timestep of each identity held out:
            ``source_images: views``; ``portrait`` trains on the one stored portrait); the stores,
            split, seed and device are the recipe's.
        nll_every: the claim-(a) NLL probe (true / shuffled / no conditioning, train and test
            windows) every this many AR steps and at the end (0: only at the end).
        nll_windows: windows per identity scored by the NLL probe.
        decoder: ``train-decoder`` fields (:class:`~pointillist_model.config.DecoderTrainConfig`) of
            every variant over the tiny preset and the recipe's budget (steps 200, 8192 points per
            step, lr 3e-3, one camera per step at half size, no LPIPS term).
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
    ar: dict[str, Any] = field(default_factory=lambda: dict(EXPERIMENT_AR),
                               metadata={"overrides": TrainConfig, "fixed": RECIPE_OWNED})
    nll_every: int = 500
    nll_windows: int = 4
    decoder: dict[str, Any] = field(default_factory=lambda: dict(EXPERIMENT_DECODER),
                                    metadata={"overrides": DecoderTrainConfig, "fixed": RECIPE_OWNED})
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
        for n in ("timesteps", "nll_windows", "max_points", "eval_timesteps"):
            if getattr(self, n) < 1:
                raise ValueError(f"{n}: must be >= 1, got {getattr(self, n)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.nll_every < 0:
            raise ValueError(f"nll_every: must be >= 0, got {self.nll_every}")
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
        self.ar = {**EXPERIMENT_AR, **self.ar}  # a file or flag sets some fields: the recipe keeps the rest
        self.decoder = {**EXPERIMENT_DECODER, **self.decoder}
        for name in ("ar", "decoder"):
            owned = sorted(set(getattr(self, name)) & set(RECIPE_OWNED))
            if owned:
                raise ValueError(f"{name}: {', '.join(owned)} set by the recipe (its stores, split, seed and device "
                                 f"keep test identities out of training)")
        self.ar_config("-", "-")  # a typo or a bad value fails here, before hours of the dataset run
        self.decoder_config("-", "-", "-", "-", "both", "-")

    def ar_config(self, store: str, out: str, supervision: str | None = None):
        """The :class:`TrainConfig` of ``train-ar`` (torch-free): tiny preset, train split, the
        recipe's budget, then ``ar``; ``supervision``: the store ``source_images: views`` draws
        from (default: beside ``store``). Raises ``ConfigError`` naming ``ar`` for a bad field."""
        from pointillist_data.fileio import build_config

        steps = int(self.ar.get("steps", 1))
        recipe = {"warmup": min(100, steps // 10), "ckpt_every": max(1, min(250, steps)),
                  "log_every": max(1, min(25, steps))}
        window = int(self.ar.get("window", EXPERIMENT_AR["window"]))
        return build_config(TrainConfig, {"store": store, "out": out, "preset": "tiny", "split": "train",
                                          "seed": self.seed, "device": self.device, "stride": window // 2,
                                          "supervision": supervision, **recipe, **self.ar}, "'ar'")

    def decoder_config(self, store: str, supervision: str, ar_checkpoint: str, out: str, variant: str,
                       held_out_serial: str, cache_dir: str | None = None):
        """The :class:`DecoderTrainConfig` of one ablation variant (``flame``: ``--points flame
        --inputs position``): tiny preset, train split, the recipe's held-out camera and budget,
        then ``decoder``. Raises ``ConfigError`` naming ``decoder`` for a bad field."""
        from pointillist_data.fileio import build_config

        points, inputs = ("flame", "position") if variant == "flame" else ("ar", variant)
        steps = int(self.decoder.get("steps", 1))
        window = int(self.ar.get("window", EXPERIMENT_AR["window"]))
        recipe = {"warmup": min(20, steps // 10), "window": window, "stride": window,
                  "model": {"attention_group": min(512, window)}, "log_every": max(1, min(25, steps)),
                  "ckpt_every": max(1, min(100, steps)), "render_every": 0}
        return build_config(DecoderTrainConfig, {
            "store": store, "supervision": supervision, "ar_checkpoint": ar_checkpoint, "out": out, "preset": "tiny",
            "points": points, "inputs": inputs, "holdout_serials": [held_out_serial], "seed": self.seed,
            "device": self.device, "cache_dir": cache_dir, "split": "train", **recipe, **self.decoder}, "'decoder'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
