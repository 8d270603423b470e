"""``make demo``: the whole pipeline on the embedded default, end to end.

demo head -> preview PNG -> synthetic capture (NeRSemble layout, 16 cameras) -> the
dataset run (landmarks from the capture's ground truth, tracking, fitting,
canonicalisation, tokenization, sharding) -> validate -> inspect PNG -> report, then the
tiny AR model trained briefly on the store and one point cloud generated from a portrait.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

console = Console()

__all__ = ["run_demo", "DemoSteps"]


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
    from pointillist_data.inspect import plot_store
    from pointillist_data.store import TokenStore, validate_store
    from pointillist_data.tracking.stage import face_region, vertex_errors

    t0 = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    steps = DemoSteps(console, 5)
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
                        landmarks="files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT")
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
    with steps.step("store: validate and inspect") as f:
        png = plot_store(TokenStore.open(pc.store), out / "store_inspect.png")
        f.update(store=pc.store, samples=validation["samples"], points=validation["points"], picture=str(png))

    from pipelines.demo_model import train_and_generate

    with steps.step(f"tiny AR model: {train_steps} training steps, one point cloud from the portrait; tiny decoder "
                    "and the demo avatar") as f:
        model_figs = train_and_generate(pc.store, out / "model", cap, pid, cfg.sequence, train_steps, console)
        figures.update(model_figs)
        f.update(model_figs)
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "demo_figures.json").write_text(json.dumps(figures, indent=1))
    console.print(f"[bold]demo finished in {figures['wall_s']:.0f} s[/]; outputs in [bold]{out}[/] "
                  f"(figures: {out / 'demo_figures.json'})")
    return figures
