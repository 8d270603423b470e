"""The data-stage and training sections of :mod:`benchmarks.gpu_check` (tracking, fitting,
train-ar, train-decoder) and what they share: the synthetic capture, its CPU tracking, timers.

Every section function takes a :class:`Context` and returns ``{"figures": {...},
"skipped": [one line per part not run]}``; the driver adds status, time and errors.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointillist_data.progress import Progress, Task

__all__ = ["Context", "timed", "cuda_peak_GiB", "skip_line", "head_scene_at", "test_scenes", "track_section",
           "fit_section", "train_section"]


@dataclass
class Context:
    """What the sections share: ``device`` (``cuda``, or ``cpu`` in smoke mode), a scratch
    folder, whether gsplat can run (and why not), the fitting iteration count, and the
    synthetic capture and its CPU tracking, built on first use."""

    device: str
    smoke: bool
    work: Path
    gsplat_ok: bool = False
    gsplat_why: str = ""
    fit_iters: int = 300
    capture_dir: Path | None = None
    export_dir: Path | None = None
    broken: str | None = None  # why the capture could not be made (the sections needing it stop)
    _cache: dict = field(default_factory=dict)

    @property
    def asset(self):
        if "asset" not in self._cache:
            from pointillist_data.flame import resolve_flame_asset

            self._cache["asset"] = resolve_flame_asset()
        return self._cache["asset"]

    def capture(self) -> tuple[Path, int, str]:
        """``(root, participant, sequence)`` of the synthetic capture given (``--capture``: its
        first participant), else of a new one: one identity, 3 timesteps, 1/20 of NeRSemble's
        frame (110 x 160)."""
        if self.broken:
            raise RuntimeError(self.broken)
        if "capture" not in self._cache and self.capture_dir is not None:  # one made before (--capture)
            c = json.loads((self.capture_dir / "capture.json").read_text())
            self._cache["capture"] = (self.capture_dir, int(c["config"]["participants"][0]), c["config"]["sequence"])
        if "capture" not in self._cache:
            from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture

            cfg = SyntheticCaptureConfig(identities=1, timesteps=3, seed=0)
            make_synthetic_capture(self.work / "capture", cfg, self.asset)
            self._cache["capture"] = (self.work / "capture", cfg.participants[0], cfg.sequence)
        return self._cache["capture"]

    def tracking_data(self):
        """The capture's frames and ground-truth landmarks (:func:`load_sequence`), at its scale."""
        from pointillist_data.capture.selection import CaptureSelection
        from pointillist_data.tracking.stage import load_sequence

        root, pid, seq = self.capture()
        lmk = root / f"{pid:03d}/ground_truth/{seq}/landmark2d/GT"
        return load_sequence(root, pid, seq, lmk, selection=CaptureSelection(scale=1.0), cache=self.work)

    def export(self) -> Path:
        """A tracking export for fitting: ``--export``, else the track section's, else the
        capture tracked here on the CPU with a short budget."""
        if "export" not in self._cache and self.export_dir is not None:
            self._cache["export"] = self.export_dir
        for d in ("track_cuda", "track_cpu"):  # the track section's output, when it ran
            if "export" not in self._cache and (self.work / d / "export" / "transforms_train.json").is_file():
                self._cache["export"] = self.work / d / "export"
        if "export" not in self._cache:
            from pointillist_data.tracking.config import TrackingConfig
            from pointillist_data.tracking.stage import run_tracking

            data = self.tracking_data()
            try:
                iters = (6, 3, 2) if self.smoke else (200, 60, 40)
                cfg = TrackingConfig(device="cpu", rigid_iters=5 if self.smoke else 60, first_frame_iters=iters[0],
                                     frame_iters=iters[1],
                                     global_iters=iters[2], render_cameras=1)
                run_tracking(data, self.asset, self.work / "tracked", cfg)
            finally:
                data.close()
            self._cache["export"] = self.work / "tracked" / "export"
        return self._cache["export"]


def timed(fn: Callable[[], Any], sync: bool = False) -> tuple[float, Any]:
    """``(seconds, fn())``; ``sync``: synchronise CUDA before and after."""
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, r


def cuda_peak_GiB() -> float:
    """Peak GPU memory allocated since the section started (GiB)."""
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def skip_line(what: str, why: str) -> str:
    """The one line a skipped part leaves in the JSON, the table and on stdout."""
    return f"{what}: {why}"


def head_scene_at(N: int, W: int, H: int):
    """``([means, quats, scales, opacities, colors], viewmat (4, 4), K (3, 3))``: ``N`` 1 mm
    Gaussians on the demo head seen from 1 m (:mod:`benchmarks.bench_render`'s scene)."""
    from benchmarks.bench_render import camera, head_scene

    vm, K = camera(W, H)
    return list(head_scene(N)), vm[0], K[0]


def test_scenes() -> dict:
    """The renderer tests' scenes (``tests/test_render.py``): ``{name: (params, viewmat, K,
    W, H)}``, float32, 32 x 26 pixels, an off-centre camera; ``near`` reaches past the borders."""
    from test_render import _scene

    out = {}
    for n, near in ((1, False), (40, False), (150, False), (60, True)):
        means, quats, scales, opac, colors, view, K = _scene(n, torch.float32, seed=n, near=near)
        out[f"N{n}{'_near' if near else ''}"] = ([means, quats, scales, opac, colors], view, K, 32, 26)
    return out


class StepTimes(Progress):
    """A progress reporter that keeps the time of every ``advance`` of every task."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def _opened(self, task: Task) -> None:
        self.times[task.description] = [time.perf_counter()]
        self._done: dict[str, float] = {**getattr(self, "_done", {}), task.description: task.completed}

    def _changed(self, task: Task) -> None:
        if task.completed != self._done.get(task.description):  # an advance, not an info update
            self._done[task.description] = task.completed
            self.times[task.description].append(time.perf_counter())

    def per_step(self, prefix: str, skip_first: bool = False) -> tuple[float, int]:
        """Mean seconds between the advances of the task whose name starts with ``prefix``
        (``skip_first``: leaving out the first, e.g. the first frame's longer fit), and how
        many were averaged (``nan, 0`` when none)."""
        for name, ts in self.times.items():
            d = np.diff(ts)[1 if skip_first else 0:]
            if name.startswith(prefix) and len(d):
                return float(np.mean(d)), len(d)
        return float("nan"), 0


# ---------------------------------------------------------------------------- 3. tracking
def track_section(ctx) -> dict:
    from pointillist_data.tracking.config import cpu_defaults, cuda_defaults
    from pointillist_data.tracking.stage import run_tracking

    out: dict = {"figures": {}, "skipped": []}
    f = out["figures"]
    data = ctx.tracking_data()
    try:
        if ctx.smoke:
            cfg = cpu_defaults(rigid_iters=5, first_frame_iters=6, frame_iters=3, global_iters=3, render_cameras=1)
            out["skipped"].append(skip_line("tracking with the CUDA preset", "needs CUDA"))
        else:  # the CUDA preset, shortened to fit the budget
            cfg = cuda_defaults(device="cuda", first_frame_iters=400, global_iters=60)
        times = StepTimes()
        s, rec = timed(lambda: run_tracking(data, ctx.asset, ctx.work / f"track_{cfg.device}", cfg, times))
    finally:
        data.close()
    seq, n_seq = times.per_step("tracking: sequential", skip_first=True)
    glob, n_glob = times.per_step("tracking: global")
    W, H = data.cameras[0].width, data.cameras[0].height
    f.update({"device": cfg.device, "image_size": f"{W}x{H}", "cameras": len(data.cameras),
              "frame_iters": cfg.frame_iters, "render_cameras": cfg.render_cameras,
              "render_frames": cfg.render_frames, "s_per_sequential_frame_step_after_first": round(seq, 4),
              "sequential_steps": n_seq, "s_per_global_iteration": round(glob, 4), "global_iterations": n_glob,
              "wall_s": round(s, 2), "landmark_error_px_mean": round(rec["metrics"]["landmark_error_px_mean"], 3)})
    if cfg.device == "cuda":
        f["peak_GiB"] = cuda_peak_GiB()
    return out


# ---------------------------------------------------------------------------- 2. fitting
def _fit(ctx, cfg) -> dict:
    from pointillist_data.fitting.data import load_export
    from pointillist_data.fitting.trainer import GaussianFitter

    data = load_export(ctx.export(), cfg.background, cfg.image_scale)
    fitter = GaussianFitter(ctx.asset, data, cfg)
    s, _ = timed(lambda: fitter.fit(), sync=cfg.device == "cuda")
    with torch.no_grad():
        held = fitter.evaluate("val")
    return {"iterations_per_s": round(cfg.iterations / s, 2), "wall_s": round(s, 2),
            "heldout_psnr_db": round(float(held["psnr"]), 3), "gaussians": len(fitter.model)}


def fit_section(ctx) -> dict:
    from pointillist_data.fitting.config import cuda_defaults

    out: dict = {"figures": {}, "skipped": []}
    f = out["figures"]
    n = ctx.fit_iters
    ctx.export()  # the CPU tracking the fit starts from (not timed below)
    f["iterations"] = n
    # the CUDA preset's recipe (SH degree 3, its schedule scaled to n) on both devices
    cpu_cfg = cuda_defaults(device="cpu", iterations=n, log_every=10**6)
    f["cpu"] = _fit(ctx, cpu_cfg)
    if ctx.smoke:
        out["skipped"].append(skip_line("fit with the CUDA preset on CUDA", "needs CUDA"))
        return out
    torch.cuda.reset_peak_memory_stats()
    f["cuda"] = {**_fit(ctx, cuda_defaults(device="cuda", iterations=n, log_every=10**6)), "peak_GiB": cuda_peak_GiB()}
    f["psnr_cuda_minus_cpu_db"] = round(f["cuda"]["heldout_psnr_db"] - f["cpu"]["heldout_psnr_db"], 3)
    f["speedup_vs_cpu"] = round(f["cuda"]["iterations_per_s"] / f["cpu"]["iterations_per_s"], 1)
    return out


# ---------------------------------------------------------------------------- 4. training
def _token_store(path: Path, samples: int, points: int, image: int) -> str:
    """A token store of random clouds (``points`` each: ``4 points + 8`` tokens) with
    ``image x image`` portraits."""
    from pointillist_data.canonical import CANONICAL_PARAMS
    from pointillist_data.store.write import Sample, StoreConfig, TokenStoreWriter
    from pointillist_data.tokens import encode

    out = []
    for i in range(samples):
        rng = np.random.default_rng(i)
        p = rng.uniform(-0.15, 0.15, (points, 3))
        b = rng.integers(0, 10144, points)
        t, o = encode(p, b, return_order=True)
        f32 = np.float32
        out.append(Sample(f"{i:03d}", t, p[o].astype(f32), b[o].astype(np.int32), rng.random((points, 3)).astype(f32),
                          rng.random(points).astype(f32), rng.random((points, 3)).astype(f32),
                          rng.random((points, 4)).astype(f32), rng.normal(size=300).astype(f32),
                          rng.integers(0, 255, (image, image, 3), dtype=np.uint8)))
    TokenStoreWriter.create(path, StoreConfig(canonical=CANONICAL_PARAMS, image_size=(image, image))).append(out)
    return str(path)


def _train(trainer, warm: int, steps: int, sync: bool) -> tuple[float, list[dict]]:
    trainer.train(steps=warm)  # kernels, workspaces, the loader's first windows
    s, log = timed(lambda: trainer.train(steps=warm + steps), sync=sync)
    return s, log


def train_section(ctx) -> dict:
    from pointillist_model.train import TrainConfig, Trainer

    out: dict = {"figures": {}, "skipped": []}
    f = out["figures"]
    cuda = ctx.device == "cuda"
    preset, window, steps = ("tiny", 64, 2) if ctx.smoke else ("paper", 12000, 8)
    store = _token_store(ctx.work / "train_store.zarr", 3, (window + 8) // 4 + 4, 64)
    cfg = TrainConfig(store=store, out=str(ctx.work / "train_ar"), preset=preset, model={"image_encoder": "patch"},
                      window=window, batch_size=1, steps=1000, warmup=1, ckpt_every=10**6, log_every=1,
                      device=ctx.device)
    tr = Trainer(cfg, ctx.asset)
    s, log = _train(tr, 1, steps, cuda)
    losses = [r["loss"] for r in log]
    f["ar"] = {"preset": preset, "window": window, "dtype": "bfloat16" if cuda else "float32",
               "steps_per_s": round(steps / s, 3), "tokens_per_s": round(steps * window / s, 1),
               "loss_finite": all(math.isfinite(x) for x in losses), "loss_last": round(losses[-1], 4),
               "params_M": round(sum(p.numel() for p in tr.model.parameters()) / 1e6, 1)}
    if cuda:
        f["ar"]["peak_GiB"] = cuda_peak_GiB()
        f["ar"]["flash_sdp_enabled"] = torch.backends.cuda.flash_sdp_enabled()
    else:
        out["skipped"].append(skip_line("train-ar paper preset, window 12000, bf16", "needs CUDA"))
    del tr
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    f["decoder"] = _train_decoder(ctx, "tiny" if ctx.smoke else "paper", 1 if ctx.smoke else 6)
    if not cuda:
        out["skipped"].append(skip_line("train-decoder paper preset", "needs CUDA"))
    return out


def _train_decoder(ctx, preset: str, steps: int) -> dict:
    from decoder_world import build_world

    from pointillist_model.decoder_train import DecoderTrainConfig, DecoderTrainer

    w = build_world(ctx.work / "decoder_world", ctx.asset, points=200 if ctx.smoke else 1500, timesteps=2)
    cfg = DecoderTrainConfig(store=w["store"], supervision=w["supervision"], ar_checkpoint=w["ar"],
                             out=str(ctx.work / "train_decoder"), preset=preset, steps=1000, warmup=1, w_lpips=0.0,
                             ckpt_every=10**6, log_every=1, device=ctx.device, deterministic=False)
    tr = DecoderTrainer(cfg, ctx.asset)
    s, log = _train(tr, 1, steps, ctx.device == "cuda")
    rec = {"preset": preset, "points": 200 if ctx.smoke else 1500, "steps_per_s": round(steps / s, 3),
           "loss_finite": all(math.isfinite(r["loss"]) for r in log),
           "params_M": round(sum(p.numel() for p in tr.model.parameters()) / 1e6, 1)}
    if ctx.device == "cuda":
        rec["peak_GiB"] = cuda_peak_GiB()
    return rec
