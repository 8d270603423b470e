"""Paper-preset generation on one GPU: tokens/s at batch 1, 8 and 32, time for a 100k-token
avatar, peak memory, and the memory-bandwidth bound of a decode step.

    python benchmarks/gpu_generate.py --out benchmarks/gpu_results.json
    python benchmarks/gpu_generate.py --smoke --out /tmp/gpu.json   # tiny preset on the CPU (tests)

Random weights (decoding cost does not depend on their values): the ``paper`` preset with the
patch image encoder, a random 513-token context (DINOv2 ViT-L/14 at 224 px + 256 latents), bf16.
Every avatar decodes ``--tokens`` tokens (greedy, ``min_points = max_points``); a decode step
costs the same at every position (the attention always covers the static 12000-slot window),
so the 100k-token time is ``100000 / (tokens/s per avatar)``. Modes: ``cuda_graph`` (the
default of :func:`~pointillist_model.generate.sample_points` on CUDA), ``compile``
(``torch.compile(mode="reduce-overhead")``) and ``eager``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_ar import matvec_bandwidth, step_bytes  # noqa: E402
from pointillist_model.ar import PRESETS, ARConfig, PointillistAR  # noqa: E402
from pointillist_model.generate import _Engine, sample_points  # noqa: E402


def measure(model, ctx_len: int, batch: int, tokens: int, mode: str, dtype, device: str) -> dict:
    points = max(1, (tokens - 8) // 4)
    ctx = torch.randn(batch, ctx_len, model.config.dim, device=device) * 0.5
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # warm-up: kernels and workspaces; torch.compile compiles per shape, so it warms at the timed size
    warm_points = points if mode == "compile" else min(points, 16)
    warm = sample_points(model, ctx, max_points=warm_points, min_points=warm_points, greedy=True, return_hidden=False,
                         graph=mode, dtype=dtype)
    t0 = time.perf_counter()
    r = sample_points(model, ctx, max_points=points, min_points=points, greedy=True, return_hidden=False, graph=mode,
                      dtype=dtype)
    wall = time.perf_counter() - t0
    per_avatar = r.generated_tokens / batch / r.seconds
    rec = {"mode": mode, "batch": batch, "tokens_per_avatar": r.generated_tokens // batch, "seconds": round(r.seconds, 3),
           "tokens_per_s": round(r.generated_tokens / r.seconds, 1), "tokens_per_s_per_avatar": round(per_avatar, 1),
           "ms_per_step": round(1000 * r.seconds / r.steps, 4), "s_per_100k_token_avatar": round(1e5 / per_avatar, 1),
           "wall_s_with_setup": round(wall, 2), "warmup_s": round(warm.seconds, 2)}
    if device == "cuda":
        rec["peak_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    eng = _Engine(model, 1, ctx_len, points, points, {"greedy": True}, False, static=True, dtype=dtype)
    rec["bytes_per_step_GB"] = round(step_bytes(eng, batch) / 1e9, 3)
    del eng
    return rec


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/gpu_results.json"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tokens", type=int, default=12008, help="tokens per avatar (one full window)")
    ap.add_argument("--modes", nargs="+", default=["cuda_graph", "compile", "eager"],
                    help="modes at batch 1 (larger batches use the first)")
    ap.add_argument("--smoke", action="store_true", help="tiny preset on the CPU, a few steps")
    args = ap.parse_args(argv)
    if args.smoke:
        device, dtype, preset = "cpu", torch.float32, "tiny"
        args.batches, args.tokens, args.modes = [1, 2], 48, ["eager"]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device (use --smoke for the CPU check)")
        device, dtype, preset = "cuda", torch.bfloat16, "paper"
    cfg = ARConfig(**{**PRESETS[preset].to_dict(), "image_encoder": "patch"})
    torch.manual_seed(0)
    model = PointillistAR(cfg).to(device).eval()
    ctx_len = 257 + cfg.num_latents if preset == "paper" else 80
    runs = []
    for batch in args.batches:
        for mode in (args.modes if batch == 1 else args.modes[:1]):
            try:
                rec = measure(model, ctx_len, batch, args.tokens, mode, dtype, device)
            except Exception as e:  # e.g. out of memory, or a mode this torch cannot capture: record it
                if args.smoke:
                    raise
                rec = {"mode": mode, "batch": batch, "error": f"{type(e).__name__}: {e}"[:500]}
                if device == "cuda":
                    torch.cuda.empty_cache()
            print(json.dumps(rec), flush=True)
            runs.append(rec)
    bw = matvec_bandwidth(device, n=16384 if device == "cuda" else 2048, dtype=dtype)
    for rec in runs:
        if "bytes_per_step_GB" in rec:
            rec["bandwidth_bound_ms_per_step"] = round(1000 * rec["bytes_per_step_GB"] * 1e9 / bw, 4)
            rec["fraction_of_bound"] = round(rec["bandwidth_bound_ms_per_step"] / rec["ms_per_step"], 3)
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "smoke": args.smoke,
           "preset": preset, "dtype": str(dtype).removeprefix("torch."), "window": cfg.max_seq_len,
           "matvec_bandwidth_GBps": round(bw / 1e9, 1), "torch": torch.__version__, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"written to {args.out}")
    return out


if __name__ == "__main__":
    main()
