"""``make demo``: the whole pipeline on the embedded default, end to end.

demo head -> preview PNG -> synthetic capture (NeRSemble layout, 16 cameras) -> the
dataset run (landmarks from the capture's ground truth, tracking, fitting,
canonicalisation, tokenization, supervision, sharding) -> validate and inspect both stores
-> report, then the tiny AR model trained briefly on the store, one point cloud generated
from a portrait, the tiny decoder and the demo avatar, and the evaluation protocol.

The demo runs the same stage functions as ``pointillist run`` / ``evaluate``, with smaller
optimisation budgets (:data:`DEMO_TRACKING`, :data:`DEMO_FITTING`) so that a fresh clone
finishes in about four minutes on two cores; the budgets are saved with each stage's config.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from pointillist_data.fileio import atomic_write_text

console = Console()

__all__ = ["run_demo", "DemoSteps", "DEMO_TRACKING", "DEMO_FITTING"]

# About 60 % of the stage defaults. Measured on the demo capture (2026-11-22, before the first
# frame's Levenberg-Marquardt refinement, which brings it to 1.17 mm: BENCHMARKS.md): tracking
# 1.63 mm mean / 3.36 mm face-region max against 1.45 / 2.75 mm with the defaults (targets
# 2 / 5 mm) in 42 s instead of 69 s; fitting held-out PSNR 29.3 dB against 29.9 dB in 78 s
# instead of 120 s.
DEMO_TRACKING = {"first_frame_iters": 250, "frame_iters": 100, "global_iters": 50}
DEMO_FITTING = {"iterations": 300}


class DemoSteps:
    """Prints each step of the demo as it starts and its figures as it ends."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.n = console, total, 0
        self.t0 = time.perf_counter()

    @contextmanager
    def step(self, title: str):
        """``with steps.step("tracking") as fig: fig["mean_mm"] = ...`` prints the figures at the end."""
        self.n += 1
        self.console.print(f"[bold cyan][{self.n}/{self.total}] {title}[/] ...")
        t = time.perf_counter()
        figs: dict = {}
        yield figs
        text = ", ".join(f"{k} {v}" for k, v in figs.items())
        self.console.print(f"      done in {time.perf_counter() - t:.1f} s" + (f": {text}" if text else ""))


def run_demo(out: Path, flame: Path | None = None, identities: int = 1, timesteps: int = 6,
             train_steps: int = 120) -> dict:
    """Run the demo into ``out``; returns the figures it printed."""
    from pipelines.monitor import RunMonitor
    from pipelines.report import write_report
    from pipelines.runner import run_pipeline
    from pipelines.stages import PipelineConfig
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture
    from pointillist_data.flame import FlameParams, resolve_flame_asset
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.flame.preview import render_preview
    from pointillist_data.store.inspect import plot_store
    from pointillist_data.store.supervision import SupervisionStore, validate_supervision_store
    from pointillist_data.store.supervision_inspect import plot_supervision
    from pointillist_data.store.token_store import TokenStore, validate_store
    from pointillist_data.tracking.stage import face_region, vertex_errors

    t0 = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    steps = DemoSteps(console, 6)
    with steps.step("head model") as f:
        asset = resolve_flame_asset(flame)
        f.update(source=asset.meta.get("source"), vertices=asset.num_vertices, faces=asset.num_faces)
        f["preview"] = str(render_preview(asset, out / "head_preview.png"))
    if asset.is_demo:
        console.print("      [yellow]demo head: for demos and tests only, no substitute for FLAME in research[/]")

    cap = out / "capture"
    cfg = SyntheticCaptureConfig(identities=identities, timesteps=timesteps, seed=0)
    pid = cfg.participants[0]
    with steps.step(f"synthetic capture: {identities} participant(s), 16 cameras, {timesteps} timesteps") as f:
        s = make_synthetic_capture(cap, cfg, asset)
        f.update(size="x".join(map(str, s["image_size"])), folder=str(cap),
                 contact_sheet=str(cap / f"{pid:03d}" / f"contact_sheet_{cfg.sequence}.png"))

    pc = PipelineConfig(capture=str(cap), out=str(out / "run"), participants=cfg.participants, sequences=[cfg.sequence],
                        flame=str(flame) if flame else None,
                        landmarks="files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT",
                        tracking=dict(DEMO_TRACKING), fitting=dict(DEMO_FITTING))
    budgets = "; ".join(f"{stage} " + ", ".join(f"{k} {v}" for k, v in b.items())
                        for stage, b in (("tracking", DEMO_TRACKING), ("fitting", DEMO_FITTING)))
    console.print(f"      demo budgets (the stage defaults are larger): {budgets}")
    with steps.step("dataset run: landmarks -> track -> fit -> canonicalize -> tokenize -> supervise -> shard") as f:
        with RunMonitor(pc.out, [f"{p:03d}" for p in cfg.participants], console) as monitor:
            summary = run_pipeline(pc, monitor=monitor)
        if summary["failed"]:
            raise RuntimeError(f"demo participants failed: {summary['failed']}")
        validation = validate_store(pc.store)
        report = write_report(pc.out, summary, validation)
        work = out / "run" / "work" / f"{pid:03d}"
        track_rec = json.loads((work / "track" / "record.json").read_text())
        fit_rec = json.loads((work / "fit" / "record.json").read_text())
        tracked = FlameParams.load(find_tracked_params(track_rec["output_dir"]))
        gt = FlameParams.load(cap / f"{pid:03d}" / "ground_truth" / cfg.sequence / "flame_params.npz")
        err = vertex_errors(asset, tracked, gt)
        face = face_region(asset, gt.shape)
        figures.update(tracking_mean_mm=round(float(err.mean() * 1e3), 3),
                       tracking_face_max_mm=round(float(err[:, face].max() * 1e3), 3),
                       fitting_heldout_psnr_db=round(fit_rec["metrics"]["psnr_heldout_db"], 2),
                       gaussians=fit_rec["metrics"]["gaussians"], store_samples=validation["samples"],
                       store_points=validation["points"])
        f.update({"tracking vs ground truth: mean": f"{figures['tracking_mean_mm']:.2f} mm",
                  "face-region max": f"{figures['tracking_face_max_mm']:.2f} mm",
                  "held-out PSNR": f"{figures['fitting_heldout_psnr_db']:.2f} dB",
                  "Gaussians": f"{figures['gaussians']} ({fit_rec['metrics']['empty_faces']} empty faces)",
                  "report": str(report)})
    with steps.step("stores: validate and inspect (token store, supervision store)") as f:
        png = plot_store(TokenStore.open(pc.store), out / "store_inspect.png")
        f.update(store=pc.store, samples=validation["samples"], points=validation["points"], picture=str(png))
        sup = validate_supervision_store(pc.supervision_store)
        sup_png = plot_supervision(SupervisionStore.open(pc.supervision_store), out / "supervision_inspect.png")
        f.update(supervision=pc.supervision_store, identities=sup.get("samples"), supervision_picture=str(sup_png))

    from pipelines.demo_model import train_and_generate

    with steps.step(f"tiny AR model: {train_steps} training steps, one point cloud from the portrait; tiny decoder "
                    "and the demo avatar") as f:
        model_figs = train_and_generate(pc.store, out / "model", cap, pid, cfg.sequence, train_steps, console)
        figures.update(model_figs)
        f.update(model_figs)
    with steps.step("evaluation (pointillist evaluate --points stored --allow-seen): self-reenactment on the held-out "
                    "camera of the identity the models trained on (not a held-out identity)") as f:
        ev = evaluate_demo(pc.store, out, asset)
        figures.update(ev)
        f.update(ev)
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "demo_figures.json", json.dumps(figures, indent=1))
    console.print(f"[bold]demo finished in {figures['wall_s']:.0f} s[/]; outputs in [bold]{out}[/] "
                  f"(figures: {out / 'demo_figures.json'})")
    return figures


def evaluate_demo(store: str, out: Path, asset) -> dict:
    """``pointillist evaluate --store STORE --decoder out/model/decoder/checkpoint.pt --points
    stored --feature-cache ... --allow-seen --out out/eval`` on every identity of the demo store
    (the same :func:`~pointillist_model.evaluate.run_evaluation`); returns the self-reenactment
    figures. The demo has one identity, which both models trained on: ``--allow-seen`` scores
    it on the decoder's held-out camera, and the report states it was seen in training."""
    from pointillist_data.progress import cli_progress
    from pointillist_model.evaluate import EvalConfig, run_evaluation

    dec = out / "model" / "decoder"
    cfg = EvalConfig(store=store, decoder=str(dec / "checkpoint.pt"), out=str(out / "eval"), points="stored",
                     feature_cache=str(dec / "ar_features"), allow_seen=True)
    with cli_progress(console) as progress:
        res, files = run_evaluation(cfg, asset, progress)
    s = res["self"]["summary"]
    figs = {f"eval_self_{m}": round(float(s[m]), 3) for m in ("psnr", "ssim", "akd", "apd")
            if s.get(m) is not None and s[m] == s[m]}
    figs.update(eval_frames=s["frames"], eval_report=files["report"],
                eval_seen_in_training=res["protocol"]["seen_in_training"]["seen"])
    return figs
