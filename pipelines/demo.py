"""``make demo``: the end-to-end run on the embedded default."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

console = Console()


def run_demo(out: Path, flame: Path | None = None) -> None:
    """Build the demo head and write its preview; later stages append to this."""
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.flame.preview import render_preview

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    asset = resolve_flame_asset(flame)
    console.print(f"[bold]head model[/]: {asset.meta.get('source')} - {asset.num_vertices} vertices, "
                  f"{asset.num_faces} faces")
    if asset.is_demo:
        console.print("[yellow]demo head: for demos and tests only, no substitute for FLAME in research[/]")
    png = render_preview(asset, out / "head_preview.png")
    console.print(f"head preview: [bold]{png}[/]")

    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture

    cfg = SyntheticCaptureConfig(identities=1, timesteps=6, seed=0)
    with console.status("rendering the synthetic capture (16 cameras)"):
        make_synthetic_capture(out / "capture", cfg, asset)
    pid = cfg.participants[0]
    console.print(f"synthetic capture: [bold]{out / 'capture'}[/]; all 16 views of frame 0: "
                  f"[bold]{out / 'capture' / f'{pid:03d}' / f'contact_sheet_{cfg.sequence}.png'}[/]")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in [bold]{out}[/]")
