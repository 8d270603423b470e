"""Tracking accuracy per synthetic identity (issue 30, item 4).

Renders the demo capture with ``--identities N`` (seed 0, 6 timesteps, 16 cameras, 110 x 160;
kept in ``--capture`` between runs), tracks each named identity with the demo budgets
(:data:`pipelines.demo.DEMO_TRACKING`) plus any ``key=value`` overrides of
:class:`~pointillist_data.tracking.config.TrackingConfig` on the ground-truth landmark files,
and prints one JSON line per identity: the mean and face-region vertex error (mm), the landmark
error (px) and :func:`pointillist_data.tracking.accuracy.vertex_error_breakdown` (the error with
groups of parameters taken from the ground truth). One thread, one identity at a time.

    .venv/bin/python benchmarks/bench_tracking_identities.py --capture /tmp/cap6 --identities 3 \
        --ids 900,901,902 [w_silhouette=0.1 ...]
"""

from __future__ import annotations

import argparse
import ast
import json
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    from pipelines.demo import DEMO_TRACKING
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture
    from pointillist_data.flame import FlameParams, resolve_flame_asset
    from pointillist_data.tracking.accuracy import vertex_error_breakdown
    from pointillist_data.tracking.config import TrackingConfig
    from pointillist_data.tracking.stage import face_region, load_sequence, vertex_errors
    from pointillist_data.tracking.tracker import FlameTracker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, required=True)
    ap.add_argument("--identities", type=int, default=3)
    ap.add_argument("--ids", default="900,901,902")
    ap.add_argument("overrides", nargs="*", help="TrackingConfig key=value")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    asset = resolve_flame_asset(None)
    seq = "EXP-1-head"
    if not (a.capture / "capture.json").is_file():
        make_synthetic_capture(a.capture, SyntheticCaptureConfig(identities=a.identities, timesteps=6, seed=0), asset)
    kw = dict(DEMO_TRACKING)
    for o in a.overrides:
        k, v = o.split("=", 1)
        kw[k] = ast.literal_eval(v)
    cfg = TrackingConfig(**kw)
    for pid in (int(x) for x in a.ids.split(",")):
        t0 = time.perf_counter()
        gt_dir = a.capture / f"{pid:03d}" / "ground_truth" / seq
        with tempfile.TemporaryDirectory() as tmp:
            data = load_sequence(a.capture, pid, seq, gt_dir / "landmark2d" / "GT", cache=tmp)
            try:
                res = FlameTracker(asset, cfg).track(data)
            finally:
                data.close()
        gt = FlameParams.load(gt_dir / "flame_params.npz")
        err = vertex_errors(asset, res.params, gt) * 1e3
        face = face_region(asset, gt.shape)
        print(json.dumps({"participant": pid, "mean_mm": round(float(err.mean()), 3),
                          "face_mm": round(float(err[:, face].mean()), 3),
                          "landmark_px": round(res.metrics["landmark_error_px_mean"], 3),
                          "breakdown_mm": {k: round(v, 2) for k, v in vertex_error_breakdown(asset, res.params, gt).items()},
                          "wall_s": round(time.perf_counter() - t0, 1), "overrides": a.overrides}), flush=True)


if __name__ == "__main__":
    main()
