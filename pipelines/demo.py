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

    # dataset from the capture's ground-truth Gaussians (stand-in until the fitted avatars are wired in)
    from pointillist_data.canonical import CANONICAL_PARAMS, canonicalize, to_sample
    from pointillist_data.flame import FlameParams
    from pointillist_data.gaussians import read_ply
    from pointillist_data.inspect import plot_store, summarize_store
    from pointillist_data.store import TokenStore, validate_store
    from pointillist_data.store_write import StoreConfig, TokenStoreWriter
    from pointillist_data.tokens import DEFAULT_BOX, Vocabulary

    gt = out / "capture" / f"{pid:03d}" / "ground_truth"
    cloud = canonicalize(read_ply(gt / "point_cloud.ply", asset.num_faces), FlameParams.load(gt / "flame_param.npz"), asset)
    sample = to_sample(f"{pid:03d}", cloud, _frontal_crop(out / "capture", pid, cfg.sequence), DEFAULT_BOX,
                       Vocabulary(num_faces=asset.num_faces))
    store_path = out / "store.zarr"
    w = TokenStoreWriter.create(store_path, StoreConfig(canonical=CANONICAL_PARAMS, tokens_per_shard=1 << 19,
                                                        tokens_per_chunk=1 << 17), overwrite=True)
    w.append([sample])
    v = validate_store(str(store_path))
    console.print(f"store: [bold]{store_path}[/] - {v['samples']} sample(s), {v['points']} points, valid")
    png = plot_store(TokenStore.open(store_path), out / "store_inspect.png")
    console.print(f"inspect: {summarize_store(TokenStore.open(store_path))['subjects']}; picture [bold]{png}[/]")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in [bold]{out}[/]")


def _frontal_crop(capture, pid: int, sequence: str, size: int = 128):
    """The conditioning image: frame 0 of the most frontal camera, centre-cropped square."""
    import numpy as np
    from PIL import Image

    from pointillist_data.capture import NersembleSequence

    seq = NersembleSequence(capture, pid, sequence)
    serial = min(seq.serials, key=lambda s: seq.cameras[s].world_to_cam[2, 2])
    img = seq.frames(serial, [0])[0]
    h, w = img.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR))
