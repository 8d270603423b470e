"""The fitting stage: a tracking export -> a GaussianAvatars-format avatar.

Outputs in ``out/``::

    point_cloud.ply        GaussianAvatars PLY (local xyz, binding_0, unit quaternions, SH degree
                           ``ply_sh_degree``), written atomically
    flame_param.npz        the sequence's FLAME parameters (fine-tuned when enabled) in
                           GaussianAvatars' layout: float32 arrays only, with static_offset
                           (1, V, 3) and dynamic_offset (T, V, 3)
    config.json            the FittingConfig used
    heldout.png            ground truth above render for the held-out camera, each tile labelled
                           with camera serial and timestep id, each render with its PSNR (dB)
    fitting_record.json    PSNR / SSIM (held-out camera and test frames), Gaussian count,
                           per-face count histogram, the held-out tiles' labels, densification
                           log, wall time,
                           ``resumed_from`` (the checkpoint's step, or null)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..capture.selection import CaptureSelection
from ..fileio import atomic_write_text
from ..flame.asset import FlameAsset
from ..gaussians import write_ply
from ..progress import NULL_PROGRESS, Progress
from ..viz import contact_sheet, draw_text, save_png
from .config import FittingConfig
from .data import load_export
from .trainer import GaussianFitter, psnr

__all__ = ["run_fitting", "heldout_png", "holdout_frames"]


def heldout_png(fitter: GaussianFitter, out: str | Path, max_images: int = 4) -> list[dict]:
    """Write ``out``: ground truth above render for up to ``max_images`` held-out-camera images
    (test frames when there is no held-out camera), each tile labelled with its camera serial
    and timestep id, each render with its PSNR (dB) against the ground truth above it.

    Returns:
        One ``{"camera", "timestep", "psnr_db"}`` per column (the labels; recorded as
        ``heldout_tiles`` in ``fitting_record.json``).
    """
    idx = fitter.data.indices("val")[:max_images]
    if len(idx) == 0:
        idx = fitter.data.indices("test")[:max_images]
    gts, preds, tiles = [], [], []
    with torch.no_grad():
        for i in (int(j) for j in idx):
            gt, pred = fitter.data.images[i], fitter.render(i).rgb[0].clamp(0, 1).cpu()
            tile = {"camera": fitter.data.cameras[i].serial, "timestep": fitter.data.images.frames[i].timestep_id,
                    "psnr_db": round(psnr(pred, gt), 2)}
            tiles.append(tile)
            # two short lines each: the labels stay inside tiles 110 pixels wide
            g = draw_text((gt.numpy() * 255).astype(np.uint8), f"cam {tile['camera']}")
            gts.append(draw_text(g, f"t {tile['timestep']}", (3, 16)))
            r = draw_text((pred.numpy() * 255).astype(np.uint8), "render")
            preds.append(draw_text(r, f"PSNR {tile['psnr_db']:.2f} dB", (3, 16)))
    save_png(contact_sheet(gts + preds, cols=len(idx)), out)
    return tiles


def holdout_frames(split: np.ndarray, timestep: np.ndarray, every: int) -> np.ndarray:
    """``split`` (``(N,)`` str: train / val / test per image) with the train images of every
    ``every``-th train timestep (the ``every - 1``-th, ``2 every - 1``-th, ... in time order)
    turned into ``val``: held-out frames of a monocular video, interpolated in time."""
    train_ts = np.unique(timestep[split == "train"])
    held = train_ts[every - 1::every]
    out = np.array(split, dtype="<U5")  # train / val / test
    out[(out == "train") & np.isin(timestep, held)] = "val"
    return out


def run_fitting(export: str | Path, asset: FlameAsset, out: str | Path, config: FittingConfig | None = None,
                progress: Progress | None = None, selection: CaptureSelection | None = None,
                extra_record: dict | None = None, checkpoint: str | Path | None = None) -> dict:
    """Fit, then write every output (see the module docstring); returns the record (which
    lists the sequences whose timesteps were fitted, their union).

    Args:
        selection: fit only these sequences / cameras / frames of the export (default all).
        extra_record: fields added to the record (e.g. the ``device`` and ``preset`` the
            config was resolved with, :mod:`pointillist_data.devices`).
        checkpoint: folder of the fit's checkpoint (default ``out/checkpoint``; written every
            ``config.checkpoint_every`` steps and on Ctrl-C, resumed from by a re-run with the
            same inputs and configuration, removed when the fit is done).

    Raises:
        FittingInputError: bad tracking outputs; FittingDivergedError: NaN during the fit.
    """
    config = config or FittingConfig()
    out = Path(out)
    t0 = time.perf_counter()
    progress = progress or NULL_PROGRESS
    with progress.task("fitting: reading the export, placing the first Gaussians") as t:
        data = load_export(export, config.background, config.image_scale, selection)
        if config.holdout_every and len({c.serial for c in data.cameras}) == 1:
            data.split = holdout_frames(data.split, data.timestep, config.holdout_every)
        fitter = GaussianFitter(asset, data, config)
        t.update(info=f"{len(data.images)} images, {len(fitter.model)} Gaussians")
    log = fitter.fit(progress, out / "checkpoint" if checkpoint is None else checkpoint)
    ok, hist = fitter.bounds()
    if not ok:  # the density control guarantees this; fail loudly rather than write a bad avatar
        raise RuntimeError(f"per-face bounds violated: {hist}")
    out.mkdir(parents=True, exist_ok=True)
    write_ply(fitter.model.export(), out / "point_cloud.ply", asset.num_faces, config.ply_sh_degree)
    fitter.flame_result().save_gaussian_avatars(out / "flame_param.npz", asset.num_vertices)
    config.save(out / "config.json")
    tiles = heldout_png(fitter, out / "heldout.png")
    record = {"metrics": {"heldout": fitter.evaluate("val", progress), "test": fitter.evaluate("test", progress),
                          "gaussians": len(fitter.model), "per_face": hist},
              "heldout_tiles": tiles, "densification": log["events"], "resumed_from": log["resumed_from"],
              "wall_s": round(time.perf_counter() - t0, 2),
              "sequences": data.sequences, "timesteps": int(data.params.num_frames), "images": len(data.images),
              **(extra_record or {})}
    atomic_write_text(out / "fitting_record.json", json.dumps(record, indent=1))
    return record
