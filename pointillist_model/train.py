"""Training the AR model from a token store (``pointillist train-ar``).

AdamW (lr 1e-4 as in the paper) with linear warm-up and cosine decay, bf16 autocast on
CUDA, gradient clipping, one GPU or ``torchrun`` DDP - the machinery of
:mod:`pointillist_model.trainer_base`, shared with the decoder trainer. Checkpoints add the
loader state, the model config and the quantisation box, so a resumed run continues the
uninterrupted loss curve exactly. Progress goes to ``log.jsonl`` (loss averaged over the ranks,
tokens/s, lr, and on logged steps the ``[sample, start]`` windows of every rank); under DDP
only rank 0 writes shared files (config, log, checkpoints) and reports progress.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.model import FlameModel
from pointillist_data.store.loader import TokenWindowDataset
from pointillist_data.store.token_store import TokenStore

from .ar import ARConfig, PointillistAR, next_token_loss
from .config import TrainConfig
from .trainer_base import BaseTrainer, load_checkpoint

__all__ = ["TrainConfig", "Trainer", "flame_vertices_for_shapes", "load_model", "training_selection_error"]


def flame_vertices_for_shapes(asset: FlameAsset, shapes: np.ndarray) -> torch.Tensor:
    """Neutral FLAME vertices ``(S, V, 3)`` of identity coefficients ``shapes (S, 300)``."""
    model = FlameModel(asset)
    with torch.no_grad():
        return model(shape=torch.as_tensor(shapes, dtype=torch.float32))["vertices"]


class Trainer(BaseTrainer):
    """One AR training run (single process, or one rank of ``torchrun``); the loop, optimiser,
    checkpoints and resume are :class:`BaseTrainer`'s."""

    rate_name = "tokens_per_s"

    def __init__(self, cfg: TrainConfig, asset: FlameAsset) -> None:
        super().__init__(cfg)
        self.store = TokenStore.open(cfg.store)
        # the vocabulary follows the store (its FLAME model's faces) unless set explicitly
        v = self.store.vocab
        self.mcfg = ARConfig(**{**cfg.model_config().to_dict(), "num_bins": v.num_bins, "num_faces": v.num_faces,
                                **cfg.model})
        if self.store.vocab != self.mcfg.vocab:
            raise ValueError(f"store vocabulary {self.store.vocab} does not match the model's {self.mcfg.vocab}")
        window = cfg.window or self.mcfg.max_seq_len
        self.dataset = TokenWindowDataset(self.store, window=window, stride=cfg.stride or window, seed=cfg.seed,
                                          with_conditioning=True, batch_size=cfg.batch_size, split=cfg.split,
                                          where=cfg.where)
        if not len(self.dataset.samples):
            raise training_selection_error(self.store, cfg.split, cfg.where)
        self.sources = None
        if cfg.source_images == "views":
            from pointillist_data.store.source_images import SourceImages

            # built from the split-filtered selection: a test identity can never be drawn
            self.sources = SourceImages(cfg.supervision, self.dataset.subject_ids, self.portrait_size,
                                        cfg.source_frames, cfg.source_cameras, cfg.source_holdout, cfg.seed)
            self.dataset.source_images = self.sources
        self.seen_subjects = sorted(set(self.dataset.subject_ids))  # grows on resume (load_extra_state)
        self.setup_optimizer(PointillistAR(self.mcfg).to(self.device))
        shapes = np.asarray(self.store.group["flame_shape"][: len(self.store)])
        self.flame_vertices = flame_vertices_for_shapes(asset, shapes).to(self.device)
        if self.rank == 0:  # shared files: one writer
            cfg.save(self.out / "train_config.json")

    def _batches(self):
        if len(self.dataset) == 0:
            raise RuntimeError("the store yields no training windows for this rank")
        while True:
            if self.dataset.consumed >= len(self.dataset):  # resumed exactly at an epoch's end
                self.dataset.set_epoch(self.dataset.epoch + 1)
            yield from self.dataset.loader(num_workers=self.cfg.num_workers)
            self.dataset.set_epoch(self.dataset.epoch + 1)

    def begin(self) -> None:
        self._iter = self._batches()

    def compute_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        batch = next(self._iter)
        tokens = batch["tokens"].to(self.device)
        mask = batch["loss_mask"].to(self.device)
        fv = self.flame_vertices[torch.as_tensor(batch["sample"], device=self.device)]
        with self.autocast():
            ctx = self.model.context(batch["image"].to(self.device), fv)
            loss = next_token_loss(self.ddp(tokens, ctx), tokens, mask)
        self._batch = {"position": batch["position"]}
        self._windows = [[int(s), int(t)] for s, t in zip(batch["sample"], batch["start"], strict=True)]
        if "source" in batch:  # the (timestep, camera) each window's image was drawn from
            for w, kc in zip(self._windows, batch["source"].tolist(), strict=True):
                w.extend(kc)
        return loss, {"count": float(mask.sum())}

    def task_label(self) -> str:
        return f"training ({self.cfg.preset} preset)"

    @property
    def portrait_size(self) -> int:
        """Side (pixels) of the conditioning images: the store's portraits'."""
        return int(self.store.group["image"].shape[1])

    def log_fields(self) -> dict:
        """``windows[rank][i] = [sample, start]`` (``[sample, start, timestep, camera]`` with
        ``source_images="views"``): the windows each rank trained on this step."""
        if not self.dist:
            return {"windows": [self._windows]}
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, self._windows)
        return {"windows": out}

    def after_step(self, metrics: dict[str, float]) -> None:
        self.dataset.advance(self._batch)

    def extra_state(self) -> dict:
        # the identities this model was trained on: ``evaluate`` refuses to score them
        return {"loader": self.dataset.state_dict(), "model_config": self.mcfg.to_dict(),
                "subject_ids": list(self.seen_subjects), "train_split": self.cfg.split, "train_where": self.cfg.where,
                "quant_box": self.store.box.to_dict(),
                # inference prepares portraits at this side (pointillist_model.portrait.conditioning_portrait)
                "portrait_size": self.portrait_size,
                # where the conditioning images came from; with views, the source frames never trained on
                "source_images": self.sources.record() if self.sources is not None else {"mode": "portrait"}}

    def load_extra_state(self, state: dict) -> None:
        self.dataset.load_state_dict(state["loader"])
        self.seen_subjects = sorted(set(self.seen_subjects) | {str(s) for s in state.get("subject_ids") or []})

    def model_mismatch(self, state: dict) -> str | None:
        if "model_config" not in state:
            return None
        saved, now = ARConfig.from_dict(state["model_config"]), self.mcfg
        keys = ("dim", "depth", "heads", "head_dim", "max_seq_len", "num_bins", "num_faces", "image_encoder",
                "image_size", "num_latents")
        diff = [f"{k} {getattr(saved, k)} vs {getattr(now, k)}" for k in keys if getattr(saved, k) != getattr(now, k)]
        return ", ".join(diff) or None


def training_selection_error(store: TokenStore, split: str, where: str | None) -> Exception:
    """The one-line error of a training selection holding no sample (``--split`` / ``--where``)."""
    from collections import Counter

    from pointillist_data.errors import InputError

    have = Counter(r["split"] for r in store.quality_table())
    there = ", ".join(f"{k} {v}" for k, v in sorted(have.items())) or "none"
    what = f"split '{split}'" + (f" matching '{where}'" if where else "")
    return InputError("--split" if not where else "--where", f"{store.root}: no sample of {what} to train on "
                      f"(samples per split: {there})", "training on test identities would leak into evaluate: "
                      "pass --split all only to use every sample, test identities included")


def load_model(checkpoint: str | Path | dict, device: str = "cpu") -> PointillistAR:
    """The AR model (eval mode) from a checkpoint file or its already loaded state
    (:func:`~pointillist_model.trainer_base.load_checkpoint`)."""
    s = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, device)
    model = PointillistAR(ARConfig.from_dict(s["model_config"])).to(device)
    model.load_state_dict(s["model"])
    return model.eval()
