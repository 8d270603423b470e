"""Quality figures of a tracked sequence for its stage record: the landmark error relative to
the inter-ocular distance, and the vertex error against ground truth when a synthetic
capture provides it (``<pid>/ground_truth/<sequence>/flame_params.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..flame import FlameAsset, FlameParams

__all__ = ["interocular_px", "tracking_quality"]

# outer eye corners: iBUG-68 (36, 45) and MediaPipe's 478-point mesh (33, 263)
_EYE_CORNERS = {68: (36, 45), 478: (33, 263), 468: (33, 263)}


def interocular_px(landmarks: np.ndarray) -> float | None:
    """Mean inter-ocular distance (outer eye corners, pixels) over the detected landmarks
    ``(T, C, L, 3)`` (x, y, confidence; 0 = missing); ``None`` for an unknown layout or none seen."""
    lm = np.asarray(landmarks, np.float64)
    pair = _EYE_CORNERS.get(lm.shape[-2])
    if pair is None:
        return None
    a, b = lm[..., pair[0], :], lm[..., pair[1], :]
    ok = (a[..., 2] > 0) & (b[..., 2] > 0)
    if not ok.any():
        return None
    return float(np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)[ok].mean())


def tracking_quality(asset: FlameAsset, landmarks: np.ndarray, landmark_error_px: float, tracked: FlameParams,
                     ground_truth: str | Path | None = None) -> dict[str, float]:
    """Figures added to the tracking record's ``metrics``.

    Args:
        landmarks: ``(T, C, L, 3)`` detected landmarks the tracking was fitted to.
        landmark_error_px: the tracking's mean landmark error (pixels).
        tracked: the tracked parameters (``timestep_id`` set); ground_truth: a FLAME
            parameter file of the same sequence (synthetic captures), or ``None``.

    Returns:
        ``interocular_px_mean``, ``landmark_error_iod_pct`` (percent), and with ground truth
        ``vertex_error_mm_mean`` (all vertices and tracked frames) and
        ``vertex_error_face_mm_mean`` (the face region, :func:`face_region`).
    """
    from .stage import face_region, vertex_errors

    out: dict[str, float] = {}
    iod = interocular_px(landmarks)
    if iod:
        out.update(interocular_px_mean=iod, landmark_error_iod_pct=100.0 * float(landmark_error_px) / iod)
    if ground_truth is not None and Path(ground_truth).is_file():
        gt = FlameParams.load(ground_truth)
        if tracked.timestep_id is not None and gt.timestep_id is not None:
            pos = {str(t): i for i, t in enumerate(gt.timestep_id)}
            if not all(str(t) in pos for t in tracked.timestep_id):
                return out
            gt = FlameParams.concatenate([gt.frame(pos[str(t)]) for t in tracked.timestep_id])
        if gt.num_frames != tracked.num_frames:
            return out
        err = vertex_errors(asset, tracked, gt)
        face = face_region(asset, gt.shape)
        out.update(vertex_error_mm_mean=float(err.mean() * 1e3), vertex_error_face_mm_mean=float(err[:, face].mean() * 1e3))
    return out
