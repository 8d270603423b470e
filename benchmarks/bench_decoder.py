"""Gaussian decoder on the CPU: time and peak memory.

* tiny preset, forward + backward at 25k points (its attention groups of 1024 points);
* paper preset (L=12, 16 heads, dim 1024, full joint attention), forward. At 25k points that
  is about 39 TFLOP (31 of them attention), tens of minutes on 2 cores, so it is measured at
  ``BENCH_DECODER_PAPER_POINTS`` (default 2048 and 4096) and estimated at 25k: time from the
  FLOP count (:func:`forward_flops`) at the rate measured at the larger size, memory by a
  line through the two sizes (CPU attention is memory-efficient: linear in N); set ``BENCH_DECODER_PAPER_POINTS=25000`` to
  measure it directly.

Each measurement runs in a fresh process so that its peak resident memory
(``ru_maxrss``) is its own; ``peak_above_start_MB`` subtracts the process's size before
the measured call (model weights and inputs included in neither).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time


def forward_flops(cfg, n: int, m: int = 273) -> float:
    """Forward FLOPs of the decoder for ``n`` points and ``m`` image tokens: two per
    multiply-add of every point-token matrix product, plus attention's ``QK^T`` and ``AV``."""
    d, h = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    per_block = 4 * d * d + 2 * d * h  # qkv + proj + MLP of the point stream
    inputs = 3 * (1 + 2 * cfg.pe_freqs) * d // 2 + 4 * cfg.ar_dim * d // 2 + d * d // 4 * 2 + d * d
    linear = 2 * n * (cfg.depth * per_block + inputs + 14 * d)
    attention = cfg.depth * 4 * n * (n + m) * d
    return float(linear + attention)


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
    from pointillist_model.decoder import DECODER_PRESETS

    paper = DECODER_PRESETS["paper"]
    sizes = [int(x) for x in os.environ.get("BENCH_DECODER_PAPER_POINTS", "2048,4096").split(",")]
    for n in sizes:
        r = _run("paper", n, False)
        out[f"paper_fwd_s_N{n}"] = r["s"]
        out[f"paper_fwd_peak_rss_MB_N{n}"] = r["peak_rss_MB"]
        out[f"paper_fwd_peak_above_start_MB_N{n}"] = r["peak_above_start_MB"]
        out[f"paper_fwd_GFLOP_per_s_N{n}"] = round(forward_flops(paper, n) / r["s"] / 1e9, 1)
        out["paper_params_M"] = r["params_M"]
    if 25_000 not in sizes:
        n = max(sizes)
        out["paper_fwd_TFLOP_N25000"] = round(forward_flops(paper, 25_000) / 1e12, 1)
        out["paper_fwd_s_N25000_estimated"] = round(out[f"paper_fwd_s_N{n}"] * forward_flops(paper, 25_000)
                                                    / forward_flops(paper, n), 0)
        if len(sizes) >= 2:
            a, b = sorted(sizes)[-2:]
            ma, mb = out[f"paper_fwd_peak_rss_MB_N{a}"], out[f"paper_fwd_peak_rss_MB_N{b}"]
            out["paper_fwd_peak_rss_MB_N25000_estimated"] = round(mb + (mb - ma) / (b - a) * (25_000 - b), 0)
    return out
