"""Units of imported FLAME parameters, checked by where the head lands in the images.

The range checks of :func:`~pointillist_data.interop.common.check_ranges` catch large
values only: a tracking in millimetres whose head moved 7 mm, or axis-angles in degrees of
a head that turned a few degrees, stay inside every bound. Here the FLAME head of a few
timesteps is projected into the export's cameras and the fraction of its vertices inside
the foreground masks is measured for the file as written and read in the usual wrong units
(translation in millimetres, axis-angles in degrees). A file whose head misses the masks,
or that fits them clearly better in other units, is refused with the suspected unit named.
VHAP writes metres and radians (``vhap/model/tracker.py``); its exports' masks are the
head's (``fg_masks/``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..capture.vhap_export import ExportFrame
from ..flame.asset import FlameAsset
from ..flame.params import FlameParams
from .common import InteropError

__all__ = ["check_head_in_masks", "MIN_INSIDE"]

ANGLE_KEYS = ("rotation", "neck_pose", "jaw_pose", "eyes_pose")
# (what the reading means, translation factor to metres, angle factor to radians)
READINGS = (("as written (metres, radians)", 1.0, 1.0),
            ("'translation' in millimetres", 1e-3, 1.0),
            ("axis-angles in degrees", 1.0, math.pi / 180),
            ("'translation' in millimetres and axis-angles in degrees", 1e-3, math.pi / 180))
# A head tracked in the right units keeps nearly all its vertices inside its masks (the
# masks hold hair, neck and shoulders too); one in wrong units lands beside or far from them.
MIN_INSIDE = 0.5  # below this (median over the views), the file is refused
CLEAR_GAIN = 0.25  # another reading this much better (and >= GOOD) names the suspected unit
GOOD = 0.8
MAX_TIMESTEPS = 4
MAX_VIEWS = 16


def _read_as(p: FlameParams, t_scale: float, a_scale: float) -> FlameParams:
    return dataclasses.replace(p, translation=p.translation * t_scale,
                               **{k: getattr(p, k) * a_scale for k in ANGLE_KEYS})


def _inside_fraction(vertices: np.ndarray, frames: list[ExportFrame], rows: list[int],
                     masks: list[np.ndarray]) -> float:
    """Median over views of the fraction of projected vertices in front of the camera, in
    the image and on the mask (``>= 0.5``); pixel centres at +0.5 (pixel ``floor(u)``)."""
    fractions = []
    for f, r, m in zip(frames, rows, masks, strict=True):
        uv, z = f.camera.project(vertices[r])
        h, w = m.shape
        px = np.floor(np.nan_to_num(uv, nan=-1.0, posinf=-1.0, neginf=-1.0)).astype(np.int64)
        ok = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        on = np.zeros(len(z), bool)
        on[ok] = m[px[ok, 1], px[ok, 0]] >= 0.5
        fractions.append(float(on.mean()))
    return float(np.median(fractions))


def check_head_in_masks(params: FlameParams, frames: list[ExportFrame], rows: list[int], asset: FlameAsset,
                        where: str) -> dict[str, float]:
    """Refuse FLAME parameters in other units than metres and radians.

    Args:
        params: ``T`` frames, in the export's (relocated) world frame.
        frames: export frames (cameras in OpenCV convention, masks) to test on; those without
            a mask are skipped; at most :data:`MAX_TIMESTEPS` timesteps and
            :data:`MAX_VIEWS` views, spread evenly, are used.
        rows: the row of ``params`` of each frame.
        asset: the head model.
        where: the file named in errors.

    Returns:
        ``{reading: median inside fraction}`` of every reading of :data:`READINGS` (empty
        when no frame has a mask: nothing to check against).

    Raises:
        InteropError: the head as written has under :data:`MIN_INSIDE` of its vertices in the
            masks, or another reading fits clearly better (at least :data:`GOOD`, and
            :data:`CLEAR_GAIN` more); the message names the suspected unit.
    """
    import torch

    from ..flame.model import FlameModel

    pairs = [(f, r) for f, r in zip(frames, rows, strict=True) if f.mask_path is not None and f.mask_path.exists()]
    if not pairs:
        return {}
    steps = sorted({r for _, r in pairs})
    keep = {steps[i] for i in np.linspace(0, len(steps) - 1, min(MAX_TIMESTEPS, len(steps))).round().astype(int)}
    pairs = [(f, r) for f, r in pairs if r in keep]
    pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(MAX_VIEWS, len(pairs))).round().astype(int)]
    used = sorted({r for _, r in pairs})
    sub = FlameParams.concatenate([params.frame(r) for r in used])
    row_of = {r: i for i, r in enumerate(used)}
    views, rows_ = [f for f, _ in pairs], [row_of[r] for _, r in pairs]
    masks = [f.mask() for f in views]
    model = FlameModel(asset, dtype=torch.float64)
    scores = {}
    with torch.no_grad():
        for name, ts, sa in READINGS:
            v = model.forward_params(_read_as(sub, ts, sa).to_torch(dtype=torch.float64)).vertices.numpy()
            scores[name] = _inside_fraction(v, views, rows_, masks)
    given = scores[READINGS[0][0]]
    best = max((r[0] for r in READINGS[1:]), key=scores.get)
    if scores[best] >= GOOD and scores[best] >= given + CLEAR_GAIN:
        raise InteropError(f"{where}: the FLAME head has {given:.0%} of its vertices inside the masks as written, "
                           f"{scores[best]:.0%} read with {best}: convert to metres and radians (VHAP's units)")
    if given < MIN_INSIDE:
        raise InteropError(f"{where}: the FLAME head has only {given:.0%} of its vertices inside the masks "
                           f"(best other reading: {best}, {scores[best]:.0%}): wrong units, cameras or head model "
                           "(--flame)?")
    return scores
