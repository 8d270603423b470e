"""Is a generated cloud degenerate? The one check ``generate-points`` and ``avatar`` share.

An undertrained model or a portrait far from the training data can end a cloud after a few
dozen points, or scatter it far from the head; the commands then still exit 0, so they say
so in one line (and the avatar's turntable carries a banner) instead of leaving a blank
render to explain. Thresholds: :class:`~pointillist_model.config.CloudCheckConfig`. Numpy
only (no torch). Source: this toolkit (issue 30), not the paper.
"""

from __future__ import annotations

import numpy as np

__all__ = ["degenerate_cloud", "head_box"]


def head_box(template: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box ``(lo (3,), hi (3,))`` of the FLAME template vertices
    ``template (V, 3)`` (metres, FLAME's canonical frame) grown by ``margin`` metres per side."""
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    return t.min(0) - margin, t.max(0) + margin


def degenerate_cloud(points: np.ndarray, template: np.ndarray, min_points: int, max_outside_fraction: float,
                     margin: float) -> str | None:
    """One line saying why the cloud is degenerate, or ``None`` when it is not.

    Args:
        points: ``(N, 3)`` positions in metres, FLAME's canonical frame (as decoded from the
            tokens, or the avatar's canonical Gaussian means).
        template: FLAME template vertices ``(V, 3)`` (``asset.v_template``), same frame.
        min_points: fewer points than this is degenerate.
        max_outside_fraction: more than this fraction of the points outside the template's
            box grown by ``margin`` (see :func:`head_box`) is degenerate.
        margin: metres the box grows by on every side (room for hair and shoulders).

    Returns:
        ``"degenerate cloud: N points (fewer than M)"``, ``"degenerate cloud: N points, X%
        outside the FLAME head's box grown by D m (more than Y%)"`` or ``None``.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(p)
    if n < min_points:
        return f"degenerate cloud: {n} points (fewer than {min_points})"
    lo, hi = head_box(template, margin)
    outside = float(np.mean(~((p >= lo) & (p <= hi)).all(1)))
    if outside > max_outside_fraction:
        return (f"degenerate cloud: {n} points, {100 * outside:.0f}% outside the FLAME head's box grown by "
                f"{margin:g} m (more than {100 * max_outside_fraction:.0f}%)")
    return None
