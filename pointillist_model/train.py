"""Training the AR model from a token store (``pointillist train-ar``).

AdamW (lr 1e-4 as in the paper) with linear warm-up and cosine decay, bf16 autocast on
CUDA, gradient clipping, one GPU or ``torchrun`` DDP. Checkpoints hold the model,
optimiser, scheduler, loader state and every RNG state, so a resumed run continues the
uninterrupted loss curve exactly. Progress goes to ``log.jsonl`` (loss averaged over the ranks,
tokens/s, lr, and on logged steps the ``[sample, start]`` windows of every rank); under DDP
only rank 0 writes shared files (config, log, checkpoints) and reports progress.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pointillist_data.fileio import JsonConfigMixin, atomic_path
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.model import FlameModel
from pointillist_data.loader import TokenWindowDataset
from pointillist_data.store import TokenStore

from .ar import PRESETS, ARConfig, PointillistAR, next_token_loss

__all__ = ["TrainConfig", "Trainer", "flame_vertices_for_shapes", "load_model"]


@dataclass
class TrainConfig(JsonConfigMixin):
    """Training settings (saved beside the checkpoints).

    Attributes:
        store: token store path or URL.
        out: folder for checkpoints and logs.
        preset: model preset (``paper`` or ``tiny``); ``model`` overrides its fields.
        window, stride: training windows (tokens); default the model's ``max_seq_len``.
        batch_size: windows per step (per rank).
        steps: optimisation steps.
        lr, weight_decay, warmup, min_lr_ratio: AdamW and the warm-up + cosine schedule.
        grad_clip: gradient norm clip.
        seed: seeds model init, loader order and sampling.
        ckpt_every, log_every: checkpoint and log periods (steps).
        num_workers: DataLoader workers.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    store: str
    out: str
    preset: str = "tiny"
    model: dict = field(default_factory=dict)
    window: int | None = None
    stride: int | None = None
    batch_size: int = 4
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset '{self.preset}' (have {sorted(PRESETS)})")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")

    def model_config(self) -> ARConfig:
        return ARConfig(**{**PRESETS[self.preset].to_dict(), **self.model})


def flame_vertices_for_shapes(asset: FlameAsset, shapes: np.ndarray) -> torch.Tensor:
    """Neutral FLAME vertices ``(S, V, 3)`` of identity coefficients ``shapes (S, 300)``."""
    model = FlameModel(asset)
    with torch.no_grad():
        return model(shape=torch.as_tensor(shapes, dtype=torch.float32))["vertices"]


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


class Trainer:
    """One training run (single process, or one rank of ``torchrun``)."""

    def __init__(self, cfg: TrainConfig, asset: FlameAsset) -> None:
        self.cfg = cfg
        self.dist = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.dist and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = torch.distributed.get_rank() if self.dist else 0
        dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cuda" and self.dist:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device(dev if dev != "cuda" else f"cuda:{torch.cuda.current_device()}")
        torch.manual_seed(cfg.seed)
        self.store = TokenStore.open(cfg.store)
        # the vocabulary follows the store (its FLAME model's faces) unless set explicitly
        v = self.store.vocab
        self.mcfg = ARConfig(**{**cfg.model_config().to_dict(), "num_bins": v.num_bins, "num_faces": v.num_faces,
                                **cfg.model})
        if self.store.vocab != self.mcfg.vocab:
            raise ValueError(f"store vocabulary {self.store.vocab} does not match the model's {self.mcfg.vocab}")
        self.model = PointillistAR(self.mcfg).to(self.device)
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.model) if self.dist else self.model
        window = cfg.window or self.mcfg.max_seq_len
        self.dataset = TokenWindowDataset(self.store, window=window, stride=cfg.stride or window, seed=cfg.seed,
                                          with_conditioning=True, batch_size=cfg.batch_size)
        shapes = np.asarray(self.store.group["flame_shape"][: len(self.store)])
        self.flame_vertices = flame_vertices_for_shapes(asset, shapes).to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_lambda)
        self.step = 0
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:  # shared files: one writer
            cfg.save(self.out / "train_config.json")

    def _lr_lambda(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup:
            return (step + 1) / max(1, c.warmup)
        t = (step - c.warmup) / max(1, c.steps - c.warmup)
        return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def _batches(self):
        if len(self.dataset) == 0:
            raise RuntimeError("the store yields no training windows for this rank")
        while True:
            if self.dataset.consumed >= len(self.dataset):  # resumed exactly at an epoch's end
                self.dataset.set_epoch(self.dataset.epoch + 1)
            yield from DataLoader(self.dataset, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers)
            self.dataset.set_epoch(self.dataset.epoch + 1)

    def _global_mean(self, x: torch.Tensor) -> float:
        """The mean of a scalar over the ranks (the loss of the global batch when every rank's
        windows hold as many tokens); the value itself on one process."""
        if not self.dist:
            return float(x)
        x = x.clone().float()
        torch.distributed.all_reduce(x)
        return float(x) / torch.distributed.get_world_size()

    def _gather_windows(self, batch: dict) -> list[list[list[int]]]:
        """``[rank][i] = [sample, start]``: the windows each rank trained on this step."""
        mine = [[int(s), int(t)] for s, t in zip(batch["sample"], batch["start"], strict=True)]
        if not self.dist:
            return [mine]
        out: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, mine)
        return out

    def save(self, path: Path | None = None) -> Path:
        """Atomic checkpoint with model, optimiser, scheduler, loader and RNG states."""
        path = path or self.out / "checkpoint.pt"
        if self.rank != 0:
            return path
        state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict(), "loader": self.dataset.state_dict(), "rng": _rng_state(),
                 "model_config": self.mcfg.to_dict(), "train_config": self.cfg.to_dict(),
                 "quant_box": self.store.box.to_dict()}
        with atomic_path(path, ".pt") as tmp:
            torch.save(state, tmp)
        return path

    def load(self, path: str | Path) -> None:
        s = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        self.dataset.load_state_dict(s["loader"])
        _set_rng_state(s["rng"])
        self.step = int(s["step"])

    def train(self, steps: int | None = None, progress=None) -> list[dict]:
        """Run until ``steps`` (default ``config.steps``); returns the log records."""
        cfg, log = self.cfg, []
        until = min(steps or cfg.steps, cfg.steps)
        amp = self.device.type == "cuda"
        batches = self._batches()
        self.model.train()
        logf = (self.out / "log.jsonl").open("a") if self.rank == 0 else None
        t_last, tok_count = time.perf_counter(), 0
        while self.step < until:
            batch = next(batches)
            tokens = batch["tokens"].to(self.device)
            mask = batch["loss_mask"].to(self.device)
            fv = self.flame_vertices[torch.as_tensor(batch["sample"], device=self.device)]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                ctx = self.model.context(batch["image"].to(self.device), fv)
                loss = next_token_loss(self.ddp(tokens, ctx), tokens, mask)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            self.dataset.advance(len(tokens))
            self.step += 1
            tok_count += int(mask.sum())
            rec = {"step": self.step, "loss": self._global_mean(loss.detach()), "grad_norm": float(gn),
                   "lr": self.sched.get_last_lr()[0]}
            if self.step % cfg.log_every == 0 or self.step == until:
                rec["windows"] = self._gather_windows(batch)
                dt = time.perf_counter() - t_last
                rec["tokens_per_s"] = tok_count * (torch.distributed.get_world_size() if self.dist else 1) / max(dt, 1e-9)
                t_last, tok_count = time.perf_counter(), 0
                if logf:
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                if progress:
                    progress(rec)
            log.append(rec)
            if self.step % cfg.ckpt_every == 0:
                self.save()
        if logf:
            logf.close()
        self.save()
        return log


def load_model(checkpoint: str | Path, device: str = "cpu") -> PointillistAR:
    """The AR model from a checkpoint (eval mode)."""
    s = torch.load(checkpoint, map_location=device, weights_only=False)
    model = PointillistAR(ARConfig(**s["model_config"])).to(device)
    model.load_state_dict(s["model"])
    return model.eval()
