"""The dataset run's cost model: seconds, peak memory and output bytes of every stage.

Issue 29: nobody could say how many machine-hours regenerating the dataset takes. This
benchmark runs the real stages (``pipelines.runner.run_participant``, then the token and
supervision sharding) on synthetic captures (16 cameras) at two scales (``SCALES``) and two
frame counts (``FRAMES``), each in a fresh process on one thread, and records per stage its
CPU seconds (user + system of the process: robust to a machine shared with other jobs;
one worker of ``pointillist run`` uses one core), wall seconds, peak resident memory
(sampled every 20 ms) and the bytes of its output folder. Per stage and scale it fits
``y = a + b * units`` by least squares (units: camera-frames for landmarks, supervision and
sharding, frames for the others). One more run at the small scale with twice the
optimisation budget measures what share of tracking and fitting grows with the iterations,
so ``pointillist run --dry-run`` (:mod:`pipelines.plan`) can scale the figures to a run's own
budgets. Last, a run unlike the measured ones (``VALIDATION_FRAMES`` frames, the budgets
``VALIDATION``) is estimated by :func:`pipelines.plan.estimate_participant` and measured:
the ratio must be within 2x (``tests/test_plan.py`` checks the recorded one).

The result is written to ``pipelines/cost_model.json`` (the package's file, read at run
time) with the date and machine, and returned for ``benchmarks/results.json``. A few
minutes of CPU; ``POINTILLIST_BENCH_DIR`` keeps the captures and each measurement between
runs (an interrupted bench continues), ``POINTILLIST_BENCH_JOBS`` runs measurements side by side.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SCALES = (0.05, 0.0998)  # 110 x 160 (the demo's) and 220 x 320 (4x the pixels); both even for H.264
FRAMES = (2, 5)
CAMERAS = 16
BENCH_TRACKING = {"rigid_iters": 10, "first_frame_iters": 20, "frame_iters": 10, "global_iters": 6}
BENCH_FITTING = {"iterations": 30}
# the check run: a frame count and budgets (other proportions of the iteration counts) unlike the measured runs
VALIDATION_FRAMES = 3
VALIDATION = {"tracking": {"rigid_iters": 30, "first_frame_iters": 30, "frame_iters": 25, "global_iters": 15},
              "fitting": {"iterations": 50}}
UNITS = {"landmarks": "camera-frames", "track": "frames", "fit": "frames", "canonicalize": "frames",
         "tokenize": "frames", "supervise": "camera-frames", "shard": "camera-frames"}
COST_MODEL = Path(__file__).resolve().parents[1] / "pipelines" / "cost_model.json"


class _Meter:
    """Wall and CPU seconds and peak RSS (sampled) of the code run inside ``with``."""

    def __enter__(self):
        import psutil

        self._proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0, self._c0 = time.perf_counter(), self._cpu()
        return self

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.wall_s, self.cpu_s = time.perf_counter() - self._t0, self._cpu() - self._c0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _folder_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_run(root: Path, scale: float, frames: int, tracking: dict, fitting: dict) -> dict:
    """Run one participant of a synthetic capture (``scale``, ``frames`` timesteps, 16
    cameras) through every stage and the sharding in this process, one thread.

    Returns:
        ``{"scale", "frames", "cameras", "image_size", "stages": {stage: {"wall_s", "cpu_s",
        "peak_rss_mb", "out_bytes"}}}``.

    Raises:
        RuntimeError: a stage failed.
    """
    import torch

    from pipelines import stages
    from pipelines.runner import run_participant, shard_samples
    from pipelines.stage_supervise import shard_supervision
    from pipelines.stages import PipelineConfig
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture
    from pointillist_data.flame import resolve_flame_asset

    torch.set_num_threads(1)
    scfg = SyntheticCaptureConfig(identities=1, timesteps=frames, scale=scale, seed=5)
    cap = root / f"capture_{scale}_{frames}"
    if not (cap / "capture.json").exists():
        make_synthetic_capture(cap, scfg, resolve_flame_asset())
    pid = scfg.participants[0]
    out = Path(tempfile.mkdtemp(dir=root, prefix="run_"))
    cfg = PipelineConfig(capture=str(cap), out=str(out), participants=[pid], tracking=dict(tracking),
                         fitting=dict(fitting), device="cpu")
    figures: dict[str, dict] = {}

    def metered(stage, fn):
        def run(cfg_, pid_, inputs, out_dir, asset, **kw):
            with _Meter() as m:
                res = fn(cfg_, pid_, inputs, out_dir, asset, **kw)
            figures[stage] = {"wall_s": round(m.wall_s, 3), "cpu_s": round(m.cpu_s, 3),
                              "peak_rss_mb": round(m.peak / 2**20, 1), "out_bytes": _folder_bytes(out_dir)}
            return res
        return run

    saved = dict(stages.RUNNERS)
    try:  # the runner looks its stage functions up in this dict at every stage
        for k, fn in saved.items():
            stages.RUNNERS[k] = metered(k, fn)
        summary = run_participant(cfg.to_dict(), pid, threads=1)
    finally:
        stages.RUNNERS.update(saved)
    if summary["status"] != "complete":
        raise RuntimeError(f"scale {scale}, {frames} frames: {summary['failed_stage']} failed: {summary['error']}")
    with _Meter() as m:
        shard_samples(cfg, [summary])
        shard_supervision(cfg, [summary])
    figures["shard"] = {"wall_s": round(m.wall_s, 3), "cpu_s": round(m.cpu_s, 3), "peak_rss_mb": round(m.peak / 2**20, 1),
                        "out_bytes": _folder_bytes(cfg.store) + _folder_bytes(cfg.supervision_store)}
    size = json.loads((cap / "capture.json").read_text())["image_size"]
    return {"scale": scale, "frames": frames, "cameras": CAMERAS, "image_size": size, "stages": figures}


def _spec_file(spec: dict) -> Path:
    import hashlib

    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return Path(spec["root"]) / f"measured_{spec['scale']}_{spec['frames']}_{key}.json"


def _child(spec: dict) -> dict:
    """Run :func:`measure_run` in a fresh interpreter (its own peak memory and caches); a
    result kept in ``POINTILLIST_BENCH_DIR`` by an interrupted bench is reused."""
    if _spec_file(spec).exists():
        return json.loads(_spec_file(spec).read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", json.dumps(spec)], env=env,
                       capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode or not lines:
        raise RuntimeError(f"bench_pipeline child {spec} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return json.loads(lines[-1])


def _line(xs: list[float], ys: list[float]) -> list[float]:
    """Least-squares ``[a, b]`` of ``y = a + b x``."""
    A = np.stack([np.ones(len(xs)), np.asarray(xs, float)], 1)
    (a, b), *_ = np.linalg.lstsq(A, np.asarray(ys, float), rcond=None)
    return [round(float(a), 6), round(float(b), 6)]


def units_of(stage: str, frames: int, cameras: int) -> int:
    """The units a stage's cost grows with (:data:`UNITS`)."""
    return frames * cameras if UNITS[stage] == "camera-frames" else frames


def fit_model(runs: list[dict], extra: dict) -> dict:
    """The cost model of the measured runs (format: :mod:`pipelines.plan`)."""
    scales = []
    for scale in sorted({r["scale"] for r in runs}):
        rs = sorted((r for r in runs if r["scale"] == scale), key=lambda r: r["frames"])
        w, h = rs[0]["image_size"]
        st = {}
        for stage in UNITS:
            xs = [units_of(stage, r["frames"], r["cameras"]) for r in rs]
            st[stage] = {"units": UNITS[stage], **{k: _line(xs, [r["stages"][stage][k] for r in rs])
                                                   for k in ("cpu_s", "wall_s", "peak_rss_mb", "out_bytes")},
                         "points": [[x, r["stages"][stage]["cpu_s"], r["stages"][stage]["wall_s"],
                                     r["stages"][stage]["peak_rss_mb"], r["stages"][stage]["out_bytes"]]
                                    for x, r in zip(xs, rs, strict=True)]}
        scales.append({"scale": scale, "image_size": [w, h], "pixels": w * h, "stages": st})
    # the share of a stage's time that doubles with its iterations (at the small scale, fewest frames)
    base = next(r for r in runs if r["scale"] == min(SCALES) and r["frames"] == min(FRAMES))
    share = {}
    for stage in ("track", "fit"):
        t1, t2 = base["stages"][stage]["cpu_s"], extra["stages"][stage]["cpu_s"]
        share[stage] = round(float(np.clip((t2 - t1) / t1, 0.0, 1.0)), 3)
    import torch

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "platform": platform.platform(), "torch": torch.__version__,
                        "load_average": [round(x, 2) for x in os.getloadavg()]},
            "source": "benchmarks/bench_pipeline.py (make bench)", "threads": 1, "cameras": CAMERAS,
            "budgets": {"tracking": BENCH_TRACKING, "fitting": BENCH_FITTING},
            "iteration_share": share,
            "devices": {"cpu": {"scales": scales}}}


def run() -> dict:
    """Measure, fit, write ``pipelines/cost_model.json``; then check a demo-like run against
    its estimate. Returns the figures for ``benchmarks/results.json``."""
    keep = os.environ.get("POINTILLIST_BENCH_DIR")
    root = Path(keep or tempfile.mkdtemp(prefix="bench_pipeline_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    double = {"tracking": {k: 2 * v for k, v in BENCH_TRACKING.items()},
              "fitting": {k: 2 * v for k, v in BENCH_FITTING.items()}}
    specs = [{"root": str(root), "scale": s, "frames": f, "tracking": BENCH_TRACKING, "fitting": BENCH_FITTING}
             for s in SCALES for f in FRAMES]
    specs += [{"root": str(root), "scale": min(SCALES), "frames": min(FRAMES), **double},
              {"root": str(root), "scale": min(SCALES), "frames": VALIDATION_FRAMES, **VALIDATION}]
    # POINTILLIST_BENCH_JOBS runs measurements side by side (CPU seconds are per process; on an
    # idle machine keep 1 so that runs do not share caches)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(int(os.environ.get("POINTILLIST_BENCH_JOBS", "1"))) as pool:
        results = list(pool.map(_child, specs))
    runs, extra, check = results[:len(SCALES) * len(FRAMES)], results[-2], results[-1]
    model = fit_model(runs, extra)
    from pointillist_data.fileio import atomic_write_text

    atomic_write_text(COST_MODEL, json.dumps(model, indent=1) + "\n")
    # validation: a run unlike the measured ones (more frames, the demo's budgets), estimated then measured
    from pipelines.plan import estimate_participant, load_cost_model

    vframes = VALIDATION_FRAMES
    from pipelines.stages import PipelineConfig

    cfg = PipelineConfig(capture=".", out=".", participants=[1], tracking=dict(VALIDATION["tracking"]),
                         fitting=dict(VALIDATION["fitting"]), device="cpu")
    est = estimate_participant(load_cost_model(COST_MODEL), cfg, tuple(check["image_size"]), vframes, CAMERAS)
    measured = sum(s["cpu_s"] for s in check["stages"].values())
    model["validation"] = {"run": f"scale {min(SCALES)}, {vframes} frames, {CAMERAS} cameras, budgets {VALIDATION}",
                           "estimated_cpu_s": round(est["cpu_s"], 1), "measured_cpu_s": round(measured, 1),
                           "ratio": round(est["cpu_s"] / measured, 2),
                           "per_stage": {k: [round(est["stages"][k]["cpu_s"], 2), v["cpu_s"]]
                                         for k, v in check["stages"].items()},
                           "estimated_out_bytes": int(est["out_bytes"]),
                           "measured_out_bytes": sum(s["out_bytes"] for s in check["stages"].values())}
    atomic_write_text(COST_MODEL, json.dumps(model, indent=1) + "\n")
    if not keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return {"cost_model": str(COST_MODEL.relative_to(COST_MODEL.parents[1])), "bench_s": round(time.perf_counter() - t0, 1),
            "validation": model["validation"],
            "per_scale": {str(s["scale"]): {k: {"cpu_s": v["cpu_s"], "peak_rss_mb": v["peak_rss_mb"]}
                                            for k, v in s["stages"].items()}
                          for s in model["devices"]["cpu"]["scales"]}}


if __name__ == "__main__":  # child: one measured run, its figures as the last line of stdout
    spec = json.loads(sys.argv[1])
    res = measure_run(Path(spec["root"]), spec["scale"], spec["frames"], spec["tracking"], spec["fitting"])
    _spec_file(spec).write_text(json.dumps(res))
    print(json.dumps(res))
