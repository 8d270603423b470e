"""VHAP's landmark files: ``face_landmark_2d (T, L, 3)`` (pixel x, y, confidence) and
``bounding_box (T, 5)`` (x0, y0, x1, y1, score) per camera; a frame without a face has
all-zero rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PointillistError
from ..fileio import atomic_savez

__all__ = ["LandmarkError", "load_landmarks", "write_landmarks"]


class LandmarkError(PointillistError, ValueError):
    """Landmark files are missing or malformed."""


def load_landmarks(path: str | Path) -> np.ndarray:
    """``face_landmark_2d (T, L, 3)`` from a VHAP landmark npz.

    Raises:
        LandmarkError: missing file or key, wrong shape.
    """
    path = Path(path)
    if not path.exists():
        raise LandmarkError(f"{path}: landmark file not found")
    with np.load(path) as z:
        if "face_landmark_2d" not in z.files:
            raise LandmarkError(f"{path}: missing key 'face_landmark_2d'")
        lm = np.asarray(z["face_landmark_2d"], dtype=np.float32)
    if lm.ndim != 3 or lm.shape[-1] not in (2, 3):
        raise LandmarkError(f"{path}: face_landmark_2d must be (T, L, 2|3), got {lm.shape}")
    if lm.shape[-1] == 2:
        lm = np.concatenate([lm, np.ones(lm.shape[:2] + (1,), np.float32)], -1)
    lm[~np.isfinite(lm).all(-1)] = 0.0
    return lm


def write_landmarks(path: str | Path, lmk: np.ndarray) -> Path:
    """Write ``(T, L, 3)`` landmarks with bounding boxes in VHAP's npz format (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vis = lmk[..., 2] > 0
    xy = lmk[..., :2]
    lo = np.where(vis[..., None], xy, np.inf).min(1)
    hi = np.where(vis[..., None], xy, -np.inf).max(1)
    ok = vis.any(1)
    bbox = np.zeros((len(lmk), 5), np.float32)
    bbox[ok] = np.concatenate([lo[ok], hi[ok], np.ones((ok.sum(), 1))], 1)
    return atomic_savez(path, face_landmark_2d=lmk.astype(np.float32), bounding_box=bbox)
