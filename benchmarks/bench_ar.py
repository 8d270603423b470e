"""AR model on the CPU: generation (static KV cache) against the sampler it replaced, and training.

Targets (issue 16): tiny preset, batch 1: >= 2,000 tokens/s, and the per-token time at 100k
tokens within 1.5x of the time at 1k; batch 8: tokens/s per avatar >= 0.5x batch 1's; paper
preset, batch 1: tokens/s beside this machine's memory-bandwidth bound (a large float32
matrix-vector product measures the bandwidth; the bound is bandwidth / bytes read per step).
Greedy decoding. Per-token times at 1k and 100k tokens: two decoders advanced to those
positions (the first 100k steps are timed too), then timed in alternating chunks (medians),
so that load changes on the shared machine affect both alike. Threads: ``sample_points``'
default (``num_threads="auto"``): one for batch 1, all cores for batch 8 (the batch's step
reads every row's KV cache, which the attention kernel splits over threads); the paper preset
runs steady-state steps (the whole 12000-slot window read) with the faster of one thread and
all. Eager and compiled (``graph="compile"``, what ``graph="auto"`` uses on the CPU for
generations of at least ``AUTO_COMPILE_MIN_TOKENS`` tokens, e.g. the CLI's default 30000-point
avatar) are both reported, at batch 1 and 8.
Batch 8 is also timed in steady state (full window) against the bytes its step reads, and
those against the bandwidth of main memory and the caches' read bandwidth for that many bytes.
The load average is recorded: the machine is shared.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from pointillist_model.ar import PRESETS, ARConfig, PointillistAR, next_token_loss
from pointillist_model.generate import (
    AUTO_COMPILE_MIN_TOKENS,
    BLOCK_PHASES,
    _Engine,
    _Runner,
    auto_graph_mode,
    sample_points,
)

from .baseline_sampler import baseline_sample_points


def _context(model, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model.context(torch.zeros(batch, 64, 64, 3, dtype=torch.uint8), torch.randn(batch, 500, 3, generator=g) * 0.1)


def matvec_bandwidth(device: str = "cpu", n: int = 8192, dtype=torch.float32, reps: int = 7) -> float:
    """Bytes/s of ``W @ x`` with ``W (n, n)`` (256 MiB in float32, far beyond the caches)."""
    w = torch.randn(n, n, device=device, dtype=dtype)
    x = torch.randn(n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        w @ x
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return w.numel() * w.element_size() / best


def cache_read_bandwidth(nbytes: int, reps: int = 200) -> float:
    """Bytes/s of reading ``nbytes`` that the CPU's caches hold (a dot product of two vectors of
    ``nbytes / 2`` each, repeated: the best of ``reps``), with torch's current threads."""
    x, y = torch.randn(2, max(1, int(nbytes) // 8)).unbind(0)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.dot(x, y)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * x.element_size() / best


def step_bytes(eng: _Engine, rows: int | None = None) -> int:
    """Bytes one decode step of ``eng`` reads with ``rows`` rows (default: its own): weights (the
    logits head on average over the 4 phases), the full self-attention window and the projected
    context of every row."""
    dec = eng.dec
    rows = rows or dec.rows
    total = 0
    for name, buf in dec.named_buffers():
        if buf is None or name in ("emb", "logits_w", "logits_b", "slots", "row_ids"):
            continue
        layer, _, what = name.partition("_")
        if what in ("k", "v") and dec.kinds[int(layer[1:])] == "c":
            continue  # cross-attention K/V projections run once per avatar (set_context)
        size = buf.numel() * buf.element_size()
        total += size * rows // dec.rows if what == "kv" else size  # caches: per row
    col = eng.w_coord.shape[0] * eng.w_coord.element_size()  # one vocabulary entry of the head
    total += col * (3 * eng.w_coord.shape[1] + eng.w_face.shape[1]) // 4 + rows * col  # head + embedding rows
    return total


def _interleaved_per_token(runs: list[_Runner], steps: list[int], rounds: int = 8, span: int = 256) -> list[float]:
    """Median seconds per step of each eager runner (one row each), timed in alternating chunks
    of ``span`` steps so that a change of load on the shared machine affects all of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for k, run in enumerate(runs):
            t0 = time.perf_counter()
            for _ in range(span // 4):
                run(steps[k], steps[k])
                steps[k] += 4
            times[k].append((time.perf_counter() - t0) / span)
    return [statistics.median(t) for t in times]


def _best(fns: list, reps: int = 3) -> list:
    """For each ``fn() -> GenerationResult``, its fastest of ``reps`` runs, the runs interleaved."""
    runs = [[fn() for fn in fns] for _ in range(reps)]
    return [max((r[k] for r in runs), key=lambda r: r.tokens_per_s) for k in range(len(fns))]


def run_tiny() -> dict:
    torch.manual_seed(0)
    model = PointillistAR(PRESETS["tiny"]).eval()
    ctx1, ctx8 = _context(model, 1), _context(model, 8)
    greedy = dict(greedy=True, return_hidden=False)
    n1k = 250  # points: 1,008 tokens
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        old = baseline_sample_points(model, ctx1, max_points=n1k, min_points=n1k, greedy=True, return_hidden=False)
        old_tps = (len(old.tokens[0]) - 4) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    new1, new8, sampled = _best([
        lambda: sample_points(model, ctx1, max_points=n1k, min_points=n1k, **greedy),
        lambda: sample_points(model, ctx8, max_points=n1k, min_points=n1k, **greedy),
        lambda: sample_points(model, ctx1, max_points=n1k, min_points=n1k, top_p=0.95,
                              generator=torch.Generator().manual_seed(0))])
    compiled = compiled8 = None
    try:  # torch.compile (inductor, C++): compiled once for this shape by the first call
        t0 = time.perf_counter()
        first = sample_points(model, ctx1, max_points=n1k, min_points=n1k, graph="compile", **greedy)
        compile_s = time.perf_counter() - t0
        compiled, = _best([lambda: sample_points(model, ctx1, max_points=n1k, min_points=n1k, graph="compile",
                                                 **greedy)])
        same = torch.equal(first.tokens[0], new1.tokens[0])
        sample_points(model, ctx8, max_points=n1k, min_points=n1k, graph="compile", **greedy)  # 8-row shapes
        compiled8, = _best([lambda: sample_points(model, ctx8, max_points=n1k, min_points=n1k, graph="compile",
                                                  **greedy)])
    except Exception as e:  # no C++ compiler: report it
        compiled_error = f"{type(e).__name__}: {e}"
    # per-token cost at 1k and 100k tokens: two decode engines (the step sample_points runs, full
    # window) brought to those positions, then timed alternately
    runs, steps = [], []
    torch.set_num_threads(1)
    try:
        for n in (1_000, 100_000):
            eng = _Engine(model, 1, ctx1.shape[1], 26_000, 26_000, {"greedy": True}, False, static=False)
            eng.start([0], ctx1)
            run = _Runner(eng, "eager")
            t0 = time.perf_counter()
            with torch.no_grad():
                for s in range(0, n, 4):
                    run(s, s)
            long_tps = n / (time.perf_counter() - t0)
            runs.append(run)
            steps.append(n)
        with torch.no_grad():
            t_1k, t_100k = _interleaved_per_token(runs, steps)
    finally:
        torch.set_num_threads(threads)
    variants = compiled_variants(model, ctx1, ctx8) if compiled8 else None
    per_avatar8 = new8.tokens_per_s / 8
    steady8 = _steady_state(model, ctx8, compiled8.tokens_per_s if compiled8 else None)
    auto_mode = auto_graph_mode(False, 4 * 30_000)
    b1_auto = compiled.tokens_per_s if (auto_mode == "compile" and compiled) else new1.tokens_per_s
    b8_auto = compiled8.tokens_per_s if (auto_mode == "compile" and compiled8) else new8.tokens_per_s
    return {
        "threads_batch1": 1,
        "threads_batch8": threads,
        "auto_mode_for_a_30000_point_avatar": auto_mode,
        "auto_compile_min_tokens": AUTO_COMPILE_MIN_TOKENS,
        "tokens_per_s_batch1_1k_auto_path": round(b1_auto, 1),
        "baseline_tokens_per_s_1k": round(old_tps, 1),
        "tokens_per_s_batch1_1k": round(new1.tokens_per_s, 1),
        "speedup_vs_baseline_1k": round(new1.tokens_per_s / old_tps, 1),
        "tokens_per_s_batch1_1k_top_p_0.95_with_hidden": round(sampled.tokens_per_s, 1),
        **({"tokens_per_s_batch1_1k_compiled": round(compiled.tokens_per_s, 1), "compile_s": round(compile_s, 1),
            "compiled_tokens_equal_eager": same} if compiled else {"compiled_error": compiled_error}),
        "tokens_per_s_batch1_first_100k": round(long_tps, 1),
        "s_per_token_at_1k": round(t_1k, 7),
        "s_per_token_at_100k": round(t_100k, 7),
        "per_token_100k_over_1k": round(t_100k / t_1k, 3),
        "tokens_per_s_batch8_1k": round(new8.tokens_per_s, 1),
        "tokens_per_s_per_avatar_batch8": round(per_avatar8, 1),
        "per_avatar_batch8_over_batch1": round(per_avatar8 / new1.tokens_per_s, 3),
        "tokens_per_s_batch8_1k_auto_path": round(b8_auto, 1),
        "per_avatar_batch8_over_batch1_auto_path": round(b8_auto / 8 / b1_auto, 3),
        "batch8_steady_state": steady8,
        "compiled_paths_interleaved": variants,
        "targets": {"tokens_per_s_batch1_min": 2000, "per_token_100k_over_1k_max": 1.5,
                    "per_avatar_batch8_over_batch1_min": 0.5},
    }


def _steady_state(model, ctx: torch.Tensor, compiled_tokens_per_s: float | None, steps: int = 64) -> dict:
    """Eager steps of ``len(ctx)`` rows past the first window (every slot read, no mask), and
    the compiled steps (which always read the whole window; from their measured tokens/s),
    against the bytes a step reads (:func:`step_bytes`), the matrix-vector bandwidth of main
    memory and the read bandwidth of the CPU's caches for that many bytes (a batch's KV caches
    and weights stay in them between steps: 10 MB for the tiny preset at batch 8)."""
    rows = ctx.shape[0]
    eng = _Engine(model, rows, ctx.shape[1], 1000, 1000, {"greedy": True}, False, static=False)
    eng.start(list(range(rows)), ctx)
    with torch.no_grad():
        for s in range(8):
            eng.step(BLOCK_PHASES[s % 4], s % 4, None, True)
        t0 = time.perf_counter()
        for s in range(steps):
            eng.step(BLOCK_PHASES[s % 4], s % 4, None, True)
        dt = (time.perf_counter() - t0) / steps
    nbytes, bw = step_bytes(eng), matvec_bandwidth()
    cached_bw = cache_read_bandwidth(nbytes)
    out = {"rows": rows, "s_per_step": round(dt, 6), "bytes_per_step_MB": round(nbytes / 1e6, 2),
           "achieved_GBps": round(nbytes / dt / 1e9, 2), "matvec_bandwidth_GBps": round(bw / 1e9, 2),
           "fraction_of_bound": round(nbytes / dt / bw, 3),
           "bound_tokens_per_s_per_avatar": round(bw / nbytes, 1),
           "cache_read_bandwidth_GBps": round(cached_bw / 1e9, 2)}
    if compiled_tokens_per_s:
        dtc = rows / compiled_tokens_per_s
        out.update({"compiled_s_per_step": round(dtc, 6), "compiled_achieved_GBps": round(nbytes / dtc / 1e9, 2),
                    "compiled_fraction_of_cache_bandwidth": round(nbytes / dtc / cached_bw, 3)})
    return out


def compiled_variants(model, ctx1: torch.Tensor, ctx8: torch.Tensor, rounds: int = 15, blocks: int = 25) -> dict:
    """Milliseconds per compiled step (full window) at batch 1 (one thread) and batch 8 (all
    threads) of the compiled path (explicit attention, C++ wrapper) against the previous one
    (SDPA calls from inductor's Python wrapper): engines driven directly, each timed in
    ``rounds`` alternating chunks of ``blocks`` blocks (the fastest chunk: the machine is shared)."""
    variants = ("sdpa_python_wrapper", "explicit_cpp_wrapper")
    threads, out = torch.get_num_threads(), {}
    try:
        for rows, ctx, n in ((1, ctx1, 1), (8, ctx8, threads)):
            torch.set_num_threads(n)
            runs = {}
            for name in variants:
                eng = _Engine(model, rows, ctx.shape[1], 1000, 1000, {"greedy": True}, False, static=True)
                eng.start(list(range(rows)), ctx)
                run = _Runner(eng, "compile")  # the path sample_points takes
                if name == "sdpa_python_wrapper":  # the previous one
                    eng.dec.attention = "sdpa"
                    run.fn = torch.compile(eng.block, fullgraph=True, dynamic=False)
                with torch.no_grad():
                    for _ in range(16):
                        run(0, 0)
                runs[name] = run
            best = dict.fromkeys(runs, float("inf"))
            with torch.no_grad():
                for _ in range(rounds):
                    for name, run in runs.items():
                        t0 = time.perf_counter()
                        for _ in range(blocks):
                            run(0, 0)
                        best[name] = min(best[name], (time.perf_counter() - t0) / (4 * blocks))
            same = len({tuple(r.eng.out_tok[:, :64].flatten().tolist()) for r in runs.values()}) == 1
            out[f"batch{rows}"] = {**{f"{k}_ms_per_step": round(v * 1e3, 4) for k, v in best.items()},
                                   "tokens_equal": same}
    finally:
        torch.set_num_threads(threads)
    for name in variants:
        out[f"{name}_per_avatar_batch8_over_batch1"] = round(
            out["batch1"][f"{name}_ms_per_step"] / out["batch8"][f"{name}_ms_per_step"], 3)
    b1, b8 = out["batch1"]["explicit_cpp_wrapper_ms_per_step"], out["batch8"]["explicit_cpp_wrapper_ms_per_step"]
    out["ms_per_extra_row"] = round((b8 - b1) / 7, 4)
    out["ms_per_extra_row_for_0.5x"] = round(b1 / 7, 4)  # batch 8 in at most twice batch 1's step
    return out


def run_paper(steps: int = 24) -> dict:
    """Steady-state decode steps (the full 12000-slot window read, as past the first window)."""
    cfg = ARConfig(**{**PRESETS["paper"].to_dict(), "image_encoder": "patch"})
    torch.manual_seed(0)
    model = PointillistAR(cfg).eval()
    ctx = torch.randn(1, 257 + cfg.num_latents, cfg.dim) * 0.5  # DINOv2 ViT-L/14 at 224: 257 tokens
    eng = _Engine(model, 1, ctx.shape[1], 1000, 1000, {"greedy": True}, False, static=False)
    eng.start([0], ctx)
    nbytes = step_bytes(eng)
    threads = torch.get_num_threads()
    rates = {}
    try:
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            with torch.no_grad():
                eng.block()
                t0 = time.perf_counter()
                for s in range(steps):  # as eager steps past the first window: all slots read, no mask
                    eng.step(BLOCK_PHASES[s % 4], s % 4, None, True)
            rates[str(n)] = steps / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    del eng
    bw = matvec_bandwidth()
    best, bound = max(rates.values()), bw / nbytes
    return {"tokens_per_s_batch1_by_threads": {k: round(v, 3) for k, v in rates.items()},
            "tokens_per_s_batch1": round(best, 3), "bytes_per_step_GB": round(nbytes / 1e9, 3),
            "matvec_bandwidth_GBps": round(bw / 1e9, 2), "bandwidth_bound_tokens_per_s": round(bound, 3),
            "fraction_of_bound": round(best / bound, 3), "window": cfg.max_seq_len, "dtype": "float32"}


def run_train() -> dict:
    torch.manual_seed(0)
    model = PointillistAR(PRESETS["tiny"])
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    toks = torch.randint(0, 1024, (2, 1024))
    mask = torch.ones_like(toks, dtype=torch.bool)
    c2 = _context(model, 2)
    t0 = time.perf_counter()
    for _ in range(5):
        loss = next_token_loss(model(toks, c2), toks, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"train_tokens_per_s_tiny": round(5 * toks.numel() / (time.perf_counter() - t0), 1)}


def run() -> dict:
    load = os.getloadavg()
    out = {"tiny": run_tiny(), "paper_cpu": run_paper(), **run_train()}
    out["load_average_1min_before_after"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]
    return out
