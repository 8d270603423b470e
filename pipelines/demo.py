"""``make demo``: the whole pipeline on the embedded default, end to end.

demo head -> preview PNG -> synthetic capture (NeRSemble layout, 16 cameras) -> the
dataset run (landmarks from the capture's ground truth, tracking, fitting,
canonicalisation, tokenization, sharding) -> validate -> inspect PNG -> report, then the
tiny AR model trained briefly on the store and one point cloud generated from a portrait.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

console = Console()

__all__ = ["run_demo"]


def run_demo(out: Path, flame: Path | None = None, identities: int = 1, timesteps: int = 6,
             train_steps: int = 120) -> dict:
    """Run the demo into ``out``; returns the figures it printed."""
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
    asset = resolve_flame_asset(flame)
    console.print(f"[bold]head model[/]: {asset.meta.get('source')} - {asset.num_vertices} vertices, {asset.num_faces} faces")
    if asset.is_demo:
        console.print("[yellow]demo head: for demos and tests only, no substitute for FLAME in research[/]")
    console.print(f"head preview: [bold]{render_preview(asset, out / 'head_preview.png')}[/]")

    cap = out / "capture"
    cfg = SyntheticCaptureConfig(identities=identities, timesteps=timesteps, seed=0)
    with console.status("rendering the synthetic capture (16 cameras)"):
        make_synthetic_capture(cap, cfg, asset)
    pid = cfg.participants[0]
    console.print(f"synthetic capture: [bold]{cap}[/]; all 16 views of frame 0: "
                  f"[bold]{cap / f'{pid:03d}' / f'contact_sheet_{cfg.sequence}.png'}[/]")

    pc = PipelineConfig(capture=str(cap), out=str(out / "run"), participants=cfg.participants, sequence=cfg.sequence,
                        flame=str(flame) if flame else None,
                        landmarks="files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT")
    with console.status("dataset run: landmarks -> track -> fit -> canonicalize -> tokenize -> shard"):
        summary = run_pipeline(pc, progress=lambda s: console.print(f"participant {s['participant']}: {s['status']}"))
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
    console.print(f"tracking vs ground truth: mean vertex error {figures['tracking_mean_mm']:.2f} mm, "
                  f"face-region max {figures['tracking_face_max_mm']:.2f} mm")
    console.print(f"fitting: held-out camera PSNR {figures['fitting_heldout_psnr_db']:.2f} dB with "
                  f"{figures['gaussians']} Gaussians ({fit_rec['metrics']['empty_faces']} empty faces)")
    png = plot_store(TokenStore.open(pc.store), out / "store_inspect.png")
    console.print(f"store: [bold]{pc.store}[/] ({validation['samples']} sample(s), {validation['points']} points, "
                  f"valid); inspect: [bold]{png}[/]; report: [bold]{report}[/]")

    try:
        from pipelines.demo_model import train_and_generate
    except ImportError:  # the model package lands separately
        train_and_generate = None
    if train_and_generate is not None:
        figures.update(train_and_generate(pc.store, out / "model", cap, pid, cfg.sequence, train_steps, console))
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "demo_figures.json").write_text(json.dumps(figures, indent=1))
    console.print(f"demo finished in {figures['wall_s']:.0f} s; outputs in [bold]{out}[/]")
    return figures
