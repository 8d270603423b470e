"""The training machinery shared by ``train-ar`` and ``train-decoder``.

AdamW with linear warm-up and cosine decay, bf16 autocast on CUDA, gradient clipping, one
GPU or ``torchrun`` DDP (NCCL on GPUs, gloo on CPUs), atomic checkpoints holding the model,
optimiser, scheduler, every RNG state and whatever the subclass adds (loader position,
sampler state), so a resumed run continues the uninterrupted loss curve exactly. Progress
goes to ``log.jsonl`` (one record per ``log_every`` steps), to a
:class:`pointillist_data.progress.Progress` task (current loss; the reporter shows the ETA),
to ``loss_curve.png`` beside the checkpoint (:func:`write_loss_curve`, from the whole
``log.jsonl``, so a resumed run's curve continues the earlier one) and, when the
``tensorboard`` package is installed, to TensorBoard event files in ``tensorboard/``
(through ``torch.utils.tensorboard``; without it one info line says so). Rank 0 writes them.

A subclass sets ``self.model`` and calls :meth:`BaseTrainer.setup_optimizer`, then
implements :meth:`compute_loss` (draw its own batch, return the loss and metrics) and, when
it has state of its own, :meth:`extra_state` / :meth:`load_extra_state`.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pointillist_data.devices import resolve_device
from pointillist_data.errors import InputError
from pointillist_data.progress import NULL_PROGRESS, Progress

from .config import MODEL_BUDGETS, OptimizationConfig, auto_model_preset

__all__ = ["BaseTrainer", "OptimizationConfig", "MODEL_BUDGETS", "auto_model_preset", "rng_state", "set_rng_state", "atomic_torch_save", "load_checkpoint",
           "checkpoint_subjects", "read_log", "write_loss_curve", "TrainingMonitor", "CURVE_NAME", "TENSORBOARD_DIR",
           "TENSORBOARD_MISSING"]

#: The loss-curve picture beside a trainer's checkpoint, and the TensorBoard folder.
CURVE_NAME = "loss_curve.png"
TENSORBOARD_DIR = "tensorboard"
#: The one info line when ``torch.utils.tensorboard`` cannot be imported.
TENSORBOARD_MISSING = "info: tensorboard is not installed: no TensorBoard event files (pip install tensorboard)"
# record fields that are not curves (log.jsonl also holds the windows trained on)
_NOT_SCALARS = frozenset({"step", "windows"})


def rng_state() -> dict:
    """Every RNG state a training step may consume (torch CPU and CUDA, NumPy, Python), in
    types ``torch.load(weights_only=True)`` reads (tensors, ints, floats, tuples)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    """Restore :func:`rng_state` (also the NumPy state tuple of earlier checkpoints)."""
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    if isinstance(n, dict):
        n = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _legacy_numpy_globals() -> list:
    # checkpoints written before rng_state() stored tensors held NumPy's state as an array
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint of this toolkit, read with ``torch.load(weights_only=True)``: tensors,
    containers and numbers only, so a checkpoint cannot run code when loaded (NumPy arrays
    are allowed as well, for the RNG state of earlier checkpoints).

    Raises:
        FileNotFoundError: no such file. InputError: not a checkpoint this loader can read.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "checkpoint not found", str(path))
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            s = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated file, another format, or objects weights_only refuses
        raise InputError(str(path), f"not a readable checkpoint ({type(e).__name__}: "
                                    f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
    if not isinstance(s, dict):
        raise InputError(str(path), "not a checkpoint of this toolkit (no state dictionary)")
    return s


def checkpoint_subjects(path: str | Path) -> list[str] | None:
    """The subject ids a checkpoint of this toolkit records as trained on (``subject_ids``,
    written by ``train-ar`` and ``train-decoder``); ``None`` when it records none (written
    before the record existed, or elsewhere). Memory-mapped: a large checkpoint is not read.

    Raises:
        FileNotFoundError, InputError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            s = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint (mmap needs one): the full read, with its one-line errors
        s = load_checkpoint(path)
    ids = s.get("subject_ids") if isinstance(s, dict) else None
    return None if ids is None else [str(x) for x in ids]


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary name unique to this process, then rename over ``path``."""
    from pointillist_data.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def read_log(path: str | Path) -> list[dict]:
    """The records of a ``log.jsonl``, one per step (a resumed run re-logs the steps after its
    checkpoint: the later record wins), by step; a torn last line (a crash while writing) is skipped."""
    by_step: dict[int, dict] = {}
    path = Path(path)
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            by_step[int(rec["step"])] = rec
    return [by_step[k] for k in sorted(by_step)]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in records
           if isinstance(r.get(key), int | float) and math.isfinite(float(r[key]))]
    return [p[0] for p in pts], [p[1] for p in pts]


def write_loss_curve(records: list[dict], path: str | Path, title: str = "training") -> Path:
    """Draw the training curves of ``records`` (:func:`read_log`) into a PNG, atomically.

    Panels: ``loss`` (log scale when positive) with the decoder's terms (``l1``, ``1 - ssim``,
    ``lpips``) when present; the learning rate; the held-out PSNR in dB (``heldout_psnr``) when
    present. Returns ``path``.

    Raises:
        ValueError: no record holds a loss.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointillist_data.pictures import save_figure

    steps, loss = _series(records, "loss")
    if not steps:
        raise ValueError("write_loss_curve: no record holds a loss")
    hs, hv = _series(records, "heldout_psnr")
    fig, axes = plt.subplots(1, 3 if hs else 2, figsize=(12 if hs else 9, 3.4), dpi=100)
    ax = axes[0]
    ax.plot(steps, loss, color="black", lw=1.4, label="loss", marker="o" if len(steps) < 5 else None)
    for key, label in (("l1", "L1"), ("ssim", "1 - SSIM"), ("lpips", "LPIPS")):
        s, v = _series(records, key)
        if s and any(v):
            ax.plot(s, [1 - x for x in v] if key == "ssim" else v, lw=1, label=label)
    if min(loss) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="step", title=f"loss (last {loss[-1]:.4g} at step {steps[-1]})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    s, v = _series(records, "lr")
    axes[1].plot(s, v, color="tab:orange")
    axes[1].set(xlabel="step", title="learning rate")
    axes[1].grid(alpha=0.3)
    if hs:
        axes[2].plot(hs, hv, color="tab:green", marker="o")
        axes[2].set(xlabel="step", ylabel="dB", title=f"held-out PSNR (last {hv[-1]:.2f} dB)")
        axes[2].grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=None)


class TrainingMonitor:
    """Rank 0's pictures and event files of one training run in ``out``: ``loss_curve.png``
    (redrawn from ``log.jsonl`` at each checkpoint, at the end, and at logged steps at most
    every ``curve_interval`` seconds, so drawing costs little on fast loops) and TensorBoard
    scalars in ``tensorboard/`` (every numeric field of each logged record) when
    ``torch.utils.tensorboard`` imports; otherwise :data:`TENSORBOARD_MISSING` is reported once
    through ``progress.log``.

    Args:
        out: the run's folder (holds ``log.jsonl``).
        title: the curve's title.
        progress: where the info line goes.
        curve_interval: least seconds between redraws at logged steps.
    """

    def __init__(self, out: Path, title: str, progress: Progress, curve_interval: float = 30.0) -> None:
        self.out, self.title, self.curve_interval = Path(out), title, curve_interval
        self._drawn = -math.inf
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch.utils.tensorboard needs the tensorboard package
            self.tb = None
            progress.log(TENSORBOARD_MISSING)
        else:
            self.tb = SummaryWriter(str(self.out / TENSORBOARD_DIR))

    def record(self, rec: dict) -> None:
        """Write a logged record's scalars to TensorBoard and maybe redraw the curve."""
        if self.tb is not None:
            for k, v in rec.items():
                if k not in _NOT_SCALARS and isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, int(rec["step"]))
            self.tb.flush()
        if time.perf_counter() - self._drawn >= self.curve_interval:
            self.draw()

    def draw(self) -> Path | None:
        """Redraw ``loss_curve.png`` from ``log.jsonl`` (``None`` while it holds no record)."""
        records = read_log(self.out / "log.jsonl")
        self._drawn = time.perf_counter()
        return write_loss_curve(records, self.out / CURVE_NAME, self.title) if records else None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class BaseTrainer:
    """One training run (single process, or one rank of ``torchrun``).

    Args:
        cfg: an :class:`OptimizationConfig` with an ``out`` folder (and a model ``preset``:
            ``paper`` needs CUDA).

    Raises:
        InputError: a CUDA device, or the ``paper`` preset, where torch sees no CUDA device.

    Attributes set here: ``cfg, dist, rank, world_size, device, plan`` (the
    :class:`~pointillist_data.devices.DevicePlan`: device, budget and a warning to show),
    ``step, out``; after
    :meth:`setup_optimizer`: ``model, ddp, opt, sched``.
    """

    rate_name = "items_per_s"  # the throughput field of the log records

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.dist = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.dist and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = torch.distributed.get_rank() if self.dist else 0
        self.world_size = torch.distributed.get_world_size() if self.dist else 1
        # the model preset names the budget: the paper's sizes need CUDA (an error without it),
        # the tiny ones on a machine with CUDA come with plan.warning for the caller to show
        self.plan = resolve_device(cfg.device, MODEL_BUDGETS.get(getattr(cfg, "preset", ""), "auto"))
        dev = self.plan.device
        if dev == "cuda" and self.dist:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device(dev if dev != "cuda" else f"cuda:{torch.cuda.current_device()}")
        torch.manual_seed(cfg.seed)
        self.step = 0
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ set-up
    def setup_optimizer(self, model: nn.Module, betas: tuple[float, float] = (0.9, 0.95)) -> None:
        """AdamW (decay on matrices only) and the warm-up + cosine schedule for ``model``;
        wraps it in DDP when distributed."""
        self.model = model
        self.ddp = torch.nn.parallel.DistributedDataParallel(model) if self.dist else model
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = [p for _, p in params if p.dim() >= 2]
        no_decay = [p for _, p in params if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=self.cfg.lr, betas=betas)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_lambda)

    def _lr_lambda(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup:
            return (step + 1) / max(1, c.warmup)
        t = (step - c.warmup) / max(1, c.steps - c.warmup)
        return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA, a no-op elsewhere."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # ------------------------------------------------------------------ hooks
    def begin(self) -> None:
        """Called at the start of :meth:`train` (e.g. to create batch iterators)."""

    def compute_loss(self) -> tuple[Tensor, dict[str, float]]:
        """Draw this step's batch and return ``(loss, metrics)``; ``metrics["count"]``
        (items processed) feeds the throughput figure. Gradients are zeroed before the
        call, so it may back-propagate parts of the batch itself (under ``ddp.no_sync()``)
        and return the last part plus the others' detached values."""
        raise NotImplementedError

    def after_step(self, metrics: dict[str, float]) -> None:
        """Called after each optimiser step (e.g. to advance a loader's position)."""

    def task_label(self) -> str:
        """What the progress reporter calls this run."""
        return f"training {type(self).__name__}"

    def log_fields(self) -> dict[str, Any]:
        """Extra fields for the records written to ``log.jsonl``; called on every rank at each
        logged step, so it may use collectives."""
        return {}

    def global_mean(self, x: Tensor) -> float:
        """The mean of a scalar over the ranks (the loss of the global batch when every rank's
        batch holds as many items); the value itself on one process."""
        if not self.dist:
            return float(x)
        x = x.detach().clone().float()
        torch.distributed.all_reduce(x)
        return float(x) / self.world_size

    def snapshot_every(self) -> int:
        """Period (steps) of :meth:`snapshot`; 0: never."""
        return 0

    def snapshot(self) -> dict[str, float]:
        """A periodic look at the model (rank 0, every :meth:`snapshot_every` steps and at the
        end), e.g. held-out renders; the figures returned join that step's logged record. It
        must not consume the run's random streams (a resumed run must match)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Subclass state for the checkpoint."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Path | None = None) -> Path:
        """Atomic checkpoint with model, optimiser, scheduler, RNG and subclass states (rank 0)."""
        path = Path(path) if path is not None else self.out / "checkpoint.pt"
        if self.rank != 0:
            return path
        state = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict(), "rng": rng_state(), "train_config": self.cfg.to_dict(),
                 **self.extra_state()}
        return atomic_torch_save(state, path)

    def model_mismatch(self, state: dict[str, Any]) -> str | None:
        """How a checkpoint's model differs from this run's (``None``: it matches; subclasses
        compare their saved model config)."""
        return None

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint written by :meth:`save`.

        Raises:
            InputError: not a checkpoint, or one of a different model (another preset, or an
                earlier preset definition).
        """

        s = load_checkpoint(path, self.device)
        hint = "resume with the checkpoint's model settings, or train into a new --out"
        why = self.model_mismatch(s)
        if why:
            raise InputError(str(path), f"its model differs from this run's ({why})", hint)
        try:
            self.model.load_state_dict(s["model"])
        except RuntimeError as e:  # shapes or names that differ
            lines = str(e).strip().splitlines()  # torch's last line names the first differing tensor
            raise InputError(str(path), f"its weights do not fit this run's model ({lines[-1].strip() if lines else e})",
                             hint) from None
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        self.load_extra_state(s)
        set_rng_state(s["rng"])
        self.step = int(s["step"])

    # ------------------------------------------------------------------ the loop
    def train(self, steps: int | None = None, progress: Progress | None = None,
              on_log: Callable[[dict], None] | None = None) -> list[dict]:
        """Run until ``steps`` (default ``config.steps``); returns one record per step.

        Args:
            progress: reporter for a "training" task (rank 0 only).
            on_log: called with each record written to ``log.jsonl``.
        """
        cfg, log = self.cfg, []
        until = min(steps or cfg.steps, cfg.steps)
        progress = progress if (progress is not None and self.rank == 0) else NULL_PROGRESS
        self.begin()
        self.model.train()
        logf = (self.out / "log.jsonl").open("a") if self.rank == 0 else None
        monitor = TrainingMonitor(self.out, self.task_label(), progress) if self.rank == 0 else None
        t_last, count = time.perf_counter(), 0.0
        start = self.step
        # a resumed run counts the steps left, so that the reporter's rate and ETA are this run's
        label = self.task_label() + (f" from step {start}" if start else "")
        try:
            with progress.task(label, total=until - start) as task:
                while self.step < until:
                    self.opt.zero_grad(set_to_none=True)  # before: compute_loss may accumulate
                    loss, metrics = self.compute_loss()
                    loss.backward()
                    gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.opt.step()
                    self.sched.step()
                    self.after_step(metrics)
                    self.step += 1
                    count += float(metrics.pop("count", 0.0))
                    rec = {"step": self.step, "loss": self.global_mean(loss.detach()), "grad_norm": float(gn),
                           "lr": self.sched.get_last_lr()[0], **metrics}
                    every = self.snapshot_every()
                    snap = bool(every) and (self.step % every == 0 or self.step == until)  # the same on every rank
                    if self.step % cfg.log_every == 0 or self.step == until or snap:
                        rec.update(self.log_fields())
                        dt = time.perf_counter() - t_last
                        rec[self.rate_name] = count * self.world_size / max(dt, 1e-9)
                        if snap and self.rank == 0:
                            rec.update(self.snapshot())
                        t_last, count = time.perf_counter(), 0.0  # the snapshot's time is no training time
                        if logf:
                            logf.write(json.dumps(rec) + "\n")
                            logf.flush()
                        if monitor:
                            monitor.record(rec)
                        if on_log:
                            on_log(rec)
                        info = f"loss {rec['loss']:.4f}  {rec[self.rate_name]:.3g} {self.rate_name[:-6]}/s  " \
                               f"lr {rec['lr']:.2e}"
                    task.advance(info=info if self.step % cfg.log_every == 0 or self.step == until
                                 else f"loss {rec['loss']:.4f}")
                    log.append(rec)
                    if self.step % cfg.ckpt_every == 0:
                        self.save()
                        if monitor:
                            monitor.draw()
        finally:
            if logf:
                logf.close()
            if monitor:
                monitor.close()
        self.save()
        if monitor:
            monitor.draw()
        return log
