"""Gaussian decoder on the CPU: time and peak memory.

* tiny preset, forward + backward at 25k points (its attention groups of 1024 points);
* paper preset (L=12, 16 heads, dim 1024, full joint attention), forward. At 25k points that
  is about 38 TFLOP (31 of them attention), 6-12 minutes on 2 cores, so it is measured at
  ``BENCH_DECODER_PAPER_POINTS`` (default 2048 and 4096) and extrapolated to 25k with
  ``t(N) = a N + b N^2`` fitted to the two sizes; set ``BENCH_DECODER_PAPER_POINTS=25000``
  to measure it directly.

Each measurement runs in a fresh process so that its peak resident memory
(``ru_maxrss``) is its own; ``peak_above_start_MB`` subtracts the process's size before
the measured call (model weights and inputs included in neither).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time


def _measure(preset: str, n: int, backward: bool, q) -> None:
    import torch

    from pointillist_model.decoder import DECODER_PRESETS, GaussianDecoder

    torch.manual_seed(0)
    cfg = DECODER_PRESETS[preset]
    dec = GaussianDecoder(cfg)
    pts = torch.rand(1, n, 3) * 0.3 - 0.15
    hid = torch.randn(1, n, 4, cfg.ar_dim)
    cond = torch.randn(1, 273, cfg.cond_dim)  # 257 DINOv2 tokens + 16 FLAME latents, roughly
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if backward:
        out = dec(pts, hid, cond)
        sum(t.float().square().mean() for t in out).backward()
    else:
        with torch.no_grad():
            dec(pts, hid, cond)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put({"s": round(dt, 3), "peak_rss_MB": round(peak, 1), "peak_above_start_MB": round(peak - start, 1),
           "params_M": round(sum(p.numel() for p in dec.parameters()) / 1e6, 2)})


def _run(preset: str, n: int, backward: bool) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(preset, n, backward, q))
    p.start()
    r = q.get()
    p.join()
    return r


def run() -> dict:
    tiny = _run("tiny", 25_000, True)
    out = {"tiny_fwd_bwd_s_N25000": tiny["s"], "tiny_fwd_bwd_peak_rss_MB_N25000": tiny["peak_rss_MB"],
           "tiny_fwd_bwd_peak_above_start_MB_N25000": tiny["peak_above_start_MB"], "tiny_params_M": tiny["params_M"]}
    sizes = [int(x) for x in os.environ.get("BENCH_DECODER_PAPER_POINTS", "2048,4096").split(",")]
    meas = {}
    for n in sizes:
        r = _run("paper", n, False)
        meas[n] = r["s"]
        out[f"paper_fwd_s_N{n}"] = r["s"]
        out[f"paper_fwd_peak_rss_MB_N{n}"] = r["peak_rss_MB"]
        out[f"paper_fwd_peak_above_start_MB_N{n}"] = r["peak_above_start_MB"]
        out["paper_params_M"] = r["params_M"]
    if len(meas) >= 2 and 25_000 not in meas:
        (n1, t1), (n2, t2) = sorted(meas.items())[:2]
        b = (t2 / n2 - t1 / n1) / (n2 - n1)
        a = t1 / n1 - b * n1
        out["paper_fwd_s_N25000_extrapolated"] = round(a * 25_000 + b * 25_000 ** 2, 1)
    return out
