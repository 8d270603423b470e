"""The CUDA paths, measured once: one command for a machine with a GPU (<= 8 minutes).

    python benchmarks/gpu_check.py --out benchmarks/gpu_check          # CUDA machine
    python benchmarks/gpu_check.py --wheelhouse wheels/ --out ...      # install gsplat from local wheels first
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check        # CPU, tiny sizes (the test)

Writes ``OUT/gpu_check.json`` (rewritten after every section, so a killed run keeps what it
measured) and ``OUT/gpu_check.md`` (one table). Sections, each under its own time budget
(``BUDGETS_S``, SIGALRM) and ``try``/``except``, each with a ``status`` (``ok``, ``partial``:
some parts skipped, ``skipped``, ``error``, ``timeout``) and one ``skipped`` line per part
it could not run:

1. ``render``: the project's CPU renderer against gsplat on CUDA on the renderer tests'
   scenes and a 40k-Gaussian head at 550 x 802 (images and gradients), and gsplat's
   forward + backward time there;
2. ``fit``: ``fit``'s CUDA preset on the synthetic capture for ``--fit-iters`` iterations:
   iterations/s, peak GPU memory, held-out PSNR against the CPU path at the same count;
3. ``track``: tracking on CUDA (the CUDA preset, shortened): seconds per sequential frame
   step and per global iteration;
4. ``train``: ``train-ar``'s paper preset (patch image encoder), window 12000, bf16:
   steps/s, tokens/s, peak memory, loss finite; ``train-decoder``'s paper preset: steps/s
   and peak memory;
5. ``generate``: the paper preset's tokens/s at batch 1 / 8 / 32 with CUDA graphs (the
   functions of :mod:`benchmarks.gpu_generate`), the time of a 100k-token avatar, and the
   tokens of a short greedy run identical to eager decoding.

gsplat is never downloaded: the GPU machine may have no network. Install it beforehand
(``pip install '.[cuda]'``), or give ``--wheelhouse DIR`` holding a gsplat 1.5.3 wheel
built for that machine's torch and CUDA (``pip wheel gsplat==1.5.3 -w DIR`` where the same
torch, CUDA and nvcc are installed); without it the gsplat parts are skipped with a line.
``--smoke`` runs every section at tiny sizes on the CPU and skips the CUDA parts, one line
each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the renderer tests' scenes, the decoder tests' small world

from benchmarks import gpu_check_sections as stages  # noqa: E402
from benchmarks.gpu_check_sections import (  # noqa: E402
    Context,
    cuda_peak_GiB,
    head_scene_at,
    skip_line,
    test_scenes,
    timed,
)

SECTIONS = ("render", "track", "fit", "train", "generate")
# seconds per section (and for making the synthetic capture first): 460 s in all
BUDGETS_S = {"capture": 90, "render": 60, "track": 50, "fit": 90, "train": 90, "generate": 80}


class SectionTimeout(Exception):
    """A section ran past its budget."""


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (a CUDA call in
    flight finishes first: the signal is handled between Python bytecodes)."""
    def _raise(signum, frame):
        raise SectionTimeout(f"ran past its budget of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def ensure_gsplat(wheelhouse: Path | None) -> str:
    """gsplat's version, installing it from ``wheelhouse`` (no index, no network) when it does
    not import; ``"missing: <why>"`` when it cannot be had."""
    try:
        import gsplat

        return gsplat.__version__
    except Exception as e:  # not installed, or a broken build
        why = f"{type(e).__name__}: {e}"
    if wheelhouse is None:
        return f"missing ({why}); install it beforehand or pass --wheelhouse"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse),
                        "gsplat"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"missing (pip from {wheelhouse} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]})"
    try:
        import gsplat

        return gsplat.__version__
    except Exception as e:
        return f"missing (installed from {wheelhouse} but does not import: {type(e).__name__}: {e})"


# ---------------------------------------------------------------------------- 1. renderer
def _render(params, vm, K, W, H, backend, wts=None):
    from pointillist_data.render import render_gaussians

    ps = [t.detach().clone().requires_grad_(True) for t in params]
    out = render_gaussians(*ps, vm[None], K[None], W, H, backgrounds=torch.full((1, 3), 0.3, device=vm.device),
                           backend=backend)
    if wts is not None:
        (out.rgb[0] * wts).sum().backward()
    return out, [p.grad for p in ps]


def _compare(cpu, cpu_grads, gpu, gpu_grads) -> dict:
    """Largest image difference and, per parameter, the largest gradient difference over the
    CPU gradient's largest magnitude."""
    rec = {k: float((getattr(cpu, k)[0] - getattr(gpu, k)[0].cpu()).detach().abs().max())
           for k in ("rgb", "alpha", "depth")}
    names = ("means", "quats", "scales", "opacities", "colors")
    for n, a, b in zip(names, cpu_grads, gpu_grads, strict=True):
        rec[f"grad_{n}_rel"] = float((a - b.cpu()).abs().max() / a.abs().max().clamp_min(1e-12))
    return {k: round(v, 7) for k, v in rec.items()}


def render_section(ctx: Context) -> dict:
    out: dict = {"figures": {}, "skipped": []}
    f = out["figures"]
    N, W, H = (2000, 110, 160) if ctx.smoke else (40_000, 550, 802)
    scene, vm, K = head_scene_at(N, W, H)
    wts = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1))
    s, (cpu, cpu_grads) = timed(lambda: _render(scene, vm, K, W, H, "torch", wts))
    f[f"cpu_fwd_bwd_s_N{N}_{W}x{H}"] = round(s, 3)
    f["cpu_alpha_mean"] = round(float(cpu.alpha.detach().mean()), 5)
    if not ctx.gsplat_ok:
        out["skipped"].append(skip_line("gsplat parity and CUDA renderer timing", ctx.gsplat_why))
        return out
    dev = "cuda"
    for name, (params, v, k, w, h) in test_scenes().items():
        wt = torch.rand(h, w, 3, generator=torch.Generator().manual_seed(2))
        a, ga = _render(params, v, k, w, h, "torch", wt)
        b, gb = _render([p.to(dev) for p in params], v.to(dev), k.to(dev), w, h, "gsplat", wt.to(dev))
        f[f"parity_{name}"] = _compare(a, ga, b, gb)
    sc, vmd, Kd, wd = [p.to(dev) for p in scene], vm.to(dev), K.to(dev), wts.to(dev)
    b, gb = _render(sc, vmd, Kd, W, H, "gsplat", wd)
    f[f"parity_head_N{N}_{W}x{H}"] = _compare(cpu, cpu_grads, b, gb)
    times = []
    for i in range(23):
        s, _ = timed(lambda: _render(sc, vmd, Kd, W, H, "gsplat", wd), sync=True)
        if i >= 3:  # the first calls set up kernels and workspaces
            times.append(s)
    f[f"gsplat_fwd_bwd_ms_N{N}_{W}x{H}"] = round(1000 * float(np.median(times)), 3)
    s, _ = timed(lambda: _render(sc, vmd, Kd, W, H, "torch", wd), sync=True)
    f[f"torch_backend_cuda_fwd_bwd_s_N{N}_{W}x{H}"] = round(s, 3)
    f["peak_GiB"] = cuda_peak_GiB()
    return out


# ---------------------------------------------------------------------------- 5. generation
def generate_section(ctx: Context) -> dict:
    from benchmarks.gpu_generate import measure
    from pointillist_model.ar import PRESETS, ARConfig, PointillistAR
    from pointillist_model.generate import sample_points

    out: dict = {"figures": {}, "skipped": []}
    f = out["figures"]
    preset = "tiny" if ctx.smoke else "paper"
    cfg = ARConfig(**{**PRESETS[preset].to_dict(), "image_encoder": "patch"})
    torch.manual_seed(0)
    model = PointillistAR(cfg).to(ctx.device).eval()
    ctx_len = 80 if ctx.smoke else 257 + cfg.num_latents
    dtype = torch.float32 if ctx.smoke else torch.bfloat16
    f["preset"] = preset
    if ctx.smoke:
        for batch in (1, 2):
            f[f"eager_batch{batch}"] = measure(model, ctx_len, batch, 48, "eager", dtype, "cpu")
        out["skipped"].append(skip_line("CUDA-graph tokens/s at batch 1/8/32, 100k-token avatar, tokens vs eager",
                                        "needs CUDA"))
        return out
    # a step costs the same at every position (the static 12000-slot window is read whole), so
    # 2008 tokens per avatar give the rate of a full window; batch 32 at 12008 would take minutes
    for batch in (1, 8, 32):
        f[f"cuda_graph_batch{batch}"] = measure(model, ctx_len, batch, 2008, "cuda_graph", dtype, "cuda")
    f["s_per_100k_token_avatar_batch1"] = f["cuda_graph_batch1"]["s_per_100k_token_avatar"]
    c = torch.randn(2, ctx_len, cfg.dim, device="cuda", generator=torch.Generator("cuda").manual_seed(3)) * 0.5
    runs = {m: sample_points(model, c, max_points=200, min_points=200, greedy=True, return_hidden=False, graph=m,
                             dtype=dtype) for m in ("cuda_graph", "eager")}
    same = all(torch.equal(a, b) for a, b in zip(runs["cuda_graph"].tokens, runs["eager"].tokens, strict=True))
    f["greedy_808_tokens_x2_identical_to_eager"] = same
    f["peak_GiB"] = cuda_peak_GiB()
    return out


# ---------------------------------------------------------------------------- driver
FUNCS = {"render": render_section, "track": stages.track_section, "fit": stages.fit_section,
         "train": stages.train_section, "generate": generate_section}


def run_section(name: str, ctx: Context, budget: float) -> dict:
    """One section under its budget; never raises."""
    t0 = time.perf_counter()
    if ctx.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        with time_limit(budget):
            res = FUNCS[name](ctx)
        rec = {"status": "partial" if res["skipped"] else "ok", **res}
    except SectionTimeout as e:
        rec = {"status": "timeout", "error": str(e), "figures": {}, "skipped": []}
    except Exception as e:  # one failure must not lose the other sections
        rec = {"status": "error", "error": f"{type(e).__name__}: {e}"[:800], "figures": {}, "skipped": [],
               "traceback": traceback.format_exc()[-3000:]}
    finally:
        if ctx.device == "cuda":
            torch.cuda.empty_cache()
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    rec["budget_s"] = budget
    return rec


def _make_capture(ctx: Context, budget: float) -> dict:
    t0 = time.perf_counter()
    try:
        with time_limit(budget):
            root, pid, seq = ctx.capture()
        rec = {"status": "ok", "path": str(root), "participant": pid, "sequence": seq}
    except (SectionTimeout, Exception) as e:
        rec = {"status": "error", "error": f"{type(e).__name__}: {e}"[:800]}
        ctx.broken = f"no synthetic capture ({rec['error']})"
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flat(v, f"{prefix}{k}.")
        else:
            rows.append((prefix + k, v))
    return rows


def markdown(result: dict) -> str:
    """One table: section, status, seconds, then each figure; skipped parts and errors below."""
    lines = [f"# GPU check: {result['device']} ({result['date']})", "",
             f"torch {result['torch']}, CUDA {result['cuda']}, gsplat {result['gsplat']}"
             + (", smoke mode (CPU, tiny sizes)" if result["smoke"] else "")
             + (f"; synthetic capture: {result['capture']['status']} in {result['capture']['seconds']} s"
                if "capture" in result else ""), "",
             "| section | status | s | figure | value |", "|---|---|---|---|---|"]
    for name, sec in result["sections"].items():
        rows = _flat(sec.get("figures", {})) or [("", "")]
        for i, (k, v) in enumerate(rows):
            head = f"| {name} | {sec['status']} | {sec['seconds']} " if i == 0 else "| | | "
            lines.append(f"{head}| {k} | {v} |")
    notes = [f"- {n}: skipped: {s}" for n, sec in result["sections"].items() for s in sec.get("skipped", [])]
    notes += [f"- {n}: {sec['status']}: {sec['error']}" for n, sec in result["sections"].items() if sec.get("error")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU; CUDA parts skipped")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--wheelhouse", type=Path, help="folder with a gsplat wheel to install when it does not import")
    ap.add_argument("--fit-iters", type=int, default=None, help="fitting iterations (default 300; smoke 6)")
    ap.add_argument("--budget-scale", type=float, default=None,
                    help="multiply every section's budget (default 1; 5 with --smoke: a shared CPU is slow)")
    ap.add_argument("--capture", type=Path, help="a synthetic capture made before (pointillist demo-capture); default: "
                                                 "a new one (1 identity, 3 timesteps, 110 x 160)")
    ap.add_argument("--export", type=Path, help="its tracking export (<track out>/export) for the fit section; "
                                                "default: tracked here on the CPU")
    args = ap.parse_args(argv)
    args.budget_scale = args.budget_scale or (5.0 if args.smoke else 1.0)
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device (use --smoke for the CPU check)", file=sys.stderr)
        raise SystemExit(2)
    version = ensure_gsplat(args.wheelhouse) if not args.smoke else "not used (smoke)"
    gsplat_ok = not args.smoke and not version.startswith("missing")
    if not args.smoke and not gsplat_ok:
        print(f"gsplat {version}: its parts are skipped", flush=True)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if not args.smoke else "cpu", "smoke": args.smoke,
              "torch": torch.__version__, "cuda": torch.version.cuda, "gsplat": version, "sections": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        ctx = Context(device="cpu" if args.smoke else "cuda", smoke=args.smoke, work=Path(work),
                      gsplat_ok=gsplat_ok, gsplat_why=version if not args.smoke else "needs CUDA",
                      fit_iters=args.fit_iters or (6 if args.smoke else 300), capture_dir=args.capture,
                      export_dir=args.export)
        if {"track", "fit"} & set(args.sections):  # their shared input, under its own budget
            result["capture"] = _make_capture(ctx, BUDGETS_S["capture"] * args.budget_scale)
        for name in args.sections:
            print(f"== {name}", flush=True)
            rec = run_section(name, ctx, BUDGETS_S[name] * args.budget_scale)
            result["sections"][name] = rec
            for line in rec["skipped"]:
                print(f"{name}: skipped: {line}", flush=True)
            print(json.dumps({k: v for k, v in rec.items() if k != "traceback"}, default=str)[:2000], flush=True)
            from pointillist_data.fileio import atomic_write_text

            atomic_write_text(args.out / "gpu_check.json", json.dumps(result, indent=1, default=_json_default))
            atomic_write_text(args.out / "gpu_check.md", markdown(result))
    print(f"written to {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return result


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


if __name__ == "__main__":
    main()
