"""A VHAP tracking -> the ``track`` stage's outputs.

Input (VHAP ``vhap/export_as_nerf_dataset.py`` and ``vhap/model/tracker.py``):

* the NeRF-style export folder: ``transforms.json`` (+ ``_train/_val/_test``), ``images/``,
  ``fg_masks/``, ``flame_param/<t:05d>.npz``, ``canonical_flame_param.npz``;
* optionally the tracking output folder (or file) with ``tracked_flame_params_<epoch>.npz``
  (the largest epoch unless one is asked for, as VHAP's exporter picks it).

Output folder (what :func:`pointillist_data.tracking.stage.write_tracking_outputs` writes)::

    export/                         the export: JSON files and images / masks hard-linked (or
                                    copied), FLAME parameter files re-written numbers-only
                                    (offsets of a FLAME without teeth zero-padded)
    tracked_flame_params_<E>.npz    VHAP's file when given (epoch and every array kept: lights,
                                    tex_extra ...), else assembled from the export's
                                    per-timestep files (epoch 0)
    tracking_record.json            what was imported, from where, and the checks' figures
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ..capture.vhap_export import VhapExportError, read_vhap_export
from ..fileio import atomic_write_text
from ..flame.asset import FlameAsset
from ..flame.params import FlameParams, FlameParamsError, find_tracked_params, tracked_params_name
from .common import InteropError, check_ranges, fit_to_head_model, link_or_copy
from .units import READINGS, check_head_in_masks

__all__ = ["import_vhap"]

_SPLITS = ("train", "val", "test")


def _load(path: Path, asset: FlameAsset) -> tuple[FlameParams, bool]:
    try:
        p = FlameParams.load(path)
    except (FlameParamsError, FileNotFoundError) as e:
        raise InteropError(str(e)) from e
    p, padded = fit_to_head_model(p, asset.num_vertices, str(path))
    check_ranges(p, str(path))
    return p, padded


def _check_tracked_units(tracked: FlameParams, exported: FlameParams, frames: list, order: dict[int, int],
                         asset: FlameAsset, src: Path) -> dict[str, float]:
    """:func:`check_head_in_masks` of VHAP's tracked file in the export's cameras: its
    translations moved by their mean offset to the export's (VHAP's exporter relocates the
    head), its frames by ``timestep_index_original``."""
    rows = [f.timestep_index_original if f.timestep_index_original >= 0 else f.timestep_index for f in frames]
    pairs = [(f, r) for f, r in zip(frames, rows, strict=True) if 0 <= r < tracked.num_frames]
    if not pairs:
        return {}
    common = sorted({(r, order[f.timestep_index]) for f, r in pairs})
    shift = np.mean([tracked.translation[r] - exported.translation[e] for r, e in common], axis=0)
    moved = dataclasses.replace(tracked, translation=tracked.translation - shift)
    return check_head_in_masks(moved, [f for f, _ in pairs], [r for _, r in pairs], asset, str(src))


def _tracked_file(tracking: Path, epoch: int | None) -> Path:
    if tracking.is_file():
        return tracking
    try:
        return find_tracked_params(tracking, epoch)
    except FlameParamsError as e:
        raise InteropError(str(e)) from e


def import_vhap(export: str | Path, out: str | Path, asset: FlameAsset, tracking: str | Path | None = None,
                epoch: int | None = None) -> dict:
    """Turn a VHAP export (and tracking) into track-stage outputs in ``out``.

    Args:
        export: VHAP's NeRF-style export folder.
        out: the (empty) stage folder to fill.
        asset: the head model the pipeline will use (vertex count of the offsets).
        tracking: VHAP's tracking output folder or tracked-parameter file (optional).
        epoch: which ``tracked_flame_params_<epoch>.npz`` (default: the largest).

    Returns:
        Metrics: ``timesteps`` (the tracked file's timestep ids, as the track stage records
        them), ``frames_tracked`` / ``frames_total`` (frames in the tracked file),
        ``export_timesteps`` (timesteps of the export), ``cameras``, ``images``,
        ``image_size (H, W)``, ``epoch``, ``offsets_padded``, ``splits``.

    Raises:
        InteropError: a missing or inconsistent export (file named), images whose size is
            not the frame's ``w x h``, FLAME parameters that fail validation or are out of
            range, offsets with more vertices than ``asset``.
    """
    export, out = Path(export), Path(out)
    try:
        frames = read_vhap_export(export)
        splits = {s: read_vhap_export(export, s) for s in _SPLITS if (export / f"transforms_{s}.json").exists()}
    except VhapExportError as e:
        raise InteropError(str(e)) from e
    if not frames:
        raise InteropError(f"{export / 'transforms.json'}: the export lists no frames")
    if "train" not in splits:
        raise InteropError(f"{export}: transforms_train.json missing (VHAP's exporter writes the split files)")
    steps: dict[int, Path] = {}
    seen_size: dict[int, tuple[int, int]] = {}
    for f in frames:
        if not f.image_path.exists():
            raise InteropError(f"{f.image_path}: image listed in transforms.json not found")
        if f.flame_param_path is None:
            raise InteropError(f"{export / 'transforms.json'}: frame of timestep {f.timestep_index} has no "
                               "flame_param_path (export with VHAP's default --flame_mode param)")
        steps.setdefault(f.timestep_index, f.flame_param_path)
        # every image (its header only): one resized frame would misplace every pixel of it
        h, w = iio.improps(f.image_path).shape[:2]
        if (w, h) != (f.camera.width, f.camera.height):
            raise InteropError(f"{f.image_path}: image is {w}x{h}, transforms.json says "
                               f"{f.camera.width}x{f.camera.height}")
        seen_size.setdefault(f.camera_index, (h, w))
    dst = out / "export"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ["transforms.json"] + [f"transforms_{s}.json" for s in splits]:
        link_or_copy(export / name, dst / name)
    for f in frames:
        for p in (f.image_path, f.mask_path):
            if p is not None and p.exists() and not (dst / p.relative_to(export)).exists():
                link_or_copy(p, dst / p.relative_to(export))
    padded, per_step = False, []
    for t in sorted(steps):
        p, pad = _load(steps[t], asset)
        padded |= pad
        p.save_numeric(dst / steps[t].relative_to(export))
        per_step.append(p)
    if (export / "canonical_flame_param.npz").exists():
        c, pad = _load(export / "canonical_flame_param.npz", asset)
        padded |= pad
        c.save_numeric(dst / "canonical_flame_param.npz")
    # units: where the head lands in the masks (small motion in millimetres or degrees passes
    # every range check); rows of the per-timestep parameters in timestep order
    order = {t: i for i, t in enumerate(sorted(steps))}
    exported = FlameParams.concatenate(per_step)
    fits = {"export": check_head_in_masks(exported, frames, [order[f.timestep_index] for f in frames], asset,
                                          str(steps[min(steps)].parent))}
    ids = {f.timestep_index: f.timestep_id for f in frames}
    cam0 = frames[0].camera
    if tracking is not None:
        src = _tracked_file(Path(tracking), epoch)
        tracked, pad = _load(src, asset)
        padded |= pad
        fits["tracked"] = _check_tracked_units(tracked, exported, frames, order, asset, src)
        ep = int(src.stem.rsplit("_", 1)[-1]) if src.stem.rsplit("_", 1)[-1].isdigit() else 0
        # every other array of VHAP's file (focal_length, lights, tex, tex_extra, ...) is kept
        # as it is: VHAP's tracker resumes from the file and its loader reads them
        with np.load(src, allow_pickle=False) as z:
            extra = {k: z[k] for k in z.files if k not in {f.name for f in fields(FlameParams)}}
    else:  # the export's (relocated) parameters, as one sequence
        tracked = exported
        tracked.timestep_id = np.array([ids[t] for t in sorted(steps)])
        ep, extra = 0, {}
    if tracked.image_size is None:
        tracked.image_size = np.array([cam0.height, cam0.width])
    if tracked.n_processed_frames is None:
        tracked.n_processed_frames = tracked.num_frames
    tracked.save(out / tracked_params_name(ep), extra)
    # the track stage's metric names and types (pipelines.stages.run_track: ``timesteps`` the
    # ids of the tracked frames), which the store's provenance reads (pointillist_data.provenance)
    tracked_ids = [str(i) for i in tracked.timestep_id] if tracked.timestep_id is not None else []
    metrics = {"timesteps": tracked_ids, "frames_tracked": tracked.num_frames, "frames_total": tracked.num_frames,
               "export_timesteps": len(steps), "cameras": len(seen_size), "images": len(frames),
               "image_size": [cam0.height, cam0.width], "epoch": ep, "offsets_padded": padded,
               "head_in_masks": {k: v.get(READINGS[0][0]) for k, v in fits.items()},
               "splits": {s: len(v) for s, v in splits.items()}}
    record = {"imported": {"from": "vhap", "export": str(export.resolve()),
                           "tracking": None if tracking is None else str(Path(tracking).resolve())},
              "metrics": metrics, "flagged": [], "kept": sorted(steps)}
    atomic_write_text(out / "tracking_record.json", json.dumps(record, indent=1))
    return metrics
