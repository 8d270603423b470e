"""VHAP's landmark files, read and written exactly as VHAP does.

One file per camera, ``landmark2d/<DETECTOR>/<serial>.npz`` (VHAP
``vhap/util/landmark_detector_*.py`` writes it, ``vhap/data/video_dataset.py`` reads it):

* ``face_landmark_2d (T, L, 3)``: ``x / w``, ``y / h`` (image coordinates **normalised by
  the image width and height**, continuous, pixel centres at ``+0.5 / w``) and a
  confidence; a frame where no face was found is **all -1** (every column);
* ``bounding_box (T, 5)``: ``x0 / w, y0 / h, x1 / w, y1 / h, score``; all -1 without a face.

Inside the toolkit landmarks are ``(T, L, 3)`` float32 **pixels** with a confidence (0 for
a frame without a face); :func:`load_landmarks` and :func:`write_landmarks` convert with
the camera's image size. VHAP's reader marks a frame invalid when any of its ``x, y`` is -1
and otherwise sets every confidence to 1; we do the former and keep the file's confidence
otherwise (VHAP's own detectors always write 1, so their files read the same).

A file in pixel units is only read as such when it says so with the key
``coordinate_units = "pixels"`` (the toolkit never writes that key); a file without the key
whose visible coordinates lie outside ``[-1, 2]`` is refused rather than guessed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PointillistError
from ..fileio import atomic_savez

__all__ = ["LandmarkError", "load_landmarks", "write_landmarks", "read_normalized_landmarks",
           "UNITS_KEY", "NORMALIZED_RANGE"]

UNITS_KEY = "coordinate_units"
# Normalised landmarks of a face partly outside the image stay within this range; pixel
# coordinates of any image a few pixels wide do not.
NORMALIZED_RANGE = (-1.0, 2.0)


class LandmarkError(PointillistError, ValueError):
    """Landmark files are missing or malformed."""


def _check_size(path: Path, width: int, height: int) -> None:
    if not (int(width) > 0 and int(height) > 0):
        raise LandmarkError(f"{path}: image size must be positive, got {width}x{height}")


def read_normalized_landmarks(path: str | Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Landmarks ``(T, L, 3)`` float32 as VHAP stores them (``x / w``, ``y / h``, confidence),
    with confidence 0 and coordinates 0 where a frame has no face (VHAP's -1 rows).

    Args:
        path: a landmark npz.
        image_size: ``(width, height)``; only needed for a file marked
            ``coordinate_units = "pixels"``.

    Raises:
        LandmarkError: missing, unreadable or damaged file, missing key, wrong shape, unknown units, a pixel file without
            ``image_size``, or unmarked coordinates that cannot be normalised ones.
    """
    path = Path(path)
    if not path.exists():
        raise LandmarkError(f"{path}: landmark file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "face_landmark_2d" not in z.files:
                raise LandmarkError(f"{path}: missing key 'face_landmark_2d'")
            lm = np.asarray(z["face_landmark_2d"], dtype=np.float64)
            units = str(z[UNITS_KEY]) if UNITS_KEY in z.files else "normalized"
    except LandmarkError:
        raise
    except (OSError, ValueError, EOFError) as e:  # not an npz (numpy reads other bytes as a pickle)
        raise LandmarkError(f"{path}: not a readable landmark npz ({type(e).__name__})") from None
    if lm.ndim != 3 or lm.shape[-1] not in (2, 3):
        raise LandmarkError(f"{path}: face_landmark_2d must be (T, L, 2|3), got {lm.shape}")
    if lm.shape[-1] == 2:
        lm = np.concatenate([lm, np.ones(lm.shape[:2] + (1,))], -1)
    # VHAP: a frame with any x or y equal to -1 has no face
    no_face = (lm[..., :2] == -1).any(-1).any(-1) | ~np.isfinite(lm).all(-1).all(-1)
    lm[no_face] = 0.0
    if units == "pixels":
        if image_size is None:
            raise LandmarkError(f"{path}: landmarks in pixels need the image size to normalise them")
        _check_size(path, *image_size)
        lm[..., 0] /= image_size[0]
        lm[..., 1] /= image_size[1]
        lm[no_face] = 0.0
    elif units != "normalized":
        raise LandmarkError(f"{path}: unknown {UNITS_KEY} '{units}' (expected 'normalized' or 'pixels')")
    vis = lm[..., 2] > 0
    if vis.any():
        xy = lm[..., :2][vis]
        lo, hi = float(xy.min()), float(xy.max())
        if lo < NORMALIZED_RANGE[0] or hi > NORMALIZED_RANGE[1]:
            raise LandmarkError(
                f"{path}: coordinates span [{lo:.4g}, {hi:.4g}], which is not VHAP's normalised x/w, y/h"
            ).with_hint(f"a file in pixels must say so with the key {UNITS_KEY}='pixels' (or be written "
                        "with pointillist_data.capture.landmarks_io.write_landmarks)")
    return lm.astype(np.float32)


def load_landmarks(path: str | Path, width: int, height: int) -> np.ndarray:
    """Landmarks ``(T, L, 3)`` float32 in **pixels** (continuous, pixel centres at +0.5)
    with a confidence; frames without a face have confidence 0.

    Args:
        path: a VHAP landmark npz (see the module docstring).
        width, height: the size of the images the landmarks belong to (pixels).

    Raises:
        LandmarkError: see :func:`read_normalized_landmarks`.
    """
    path = Path(path)
    _check_size(path, width, height)
    lm = read_normalized_landmarks(path, (width, height))
    lm[..., 0] *= width
    lm[..., 1] *= height
    return lm


def write_landmarks(path: str | Path, lmk: np.ndarray, width: int, height: int) -> Path:
    """Write pixel landmarks ``(T, L, 3)`` (x, y, confidence) in VHAP's format, atomically.

    Coordinates are divided by ``width`` / ``height``; a frame without any landmark of
    positive confidence is written as VHAP writes a frame without a face (all -1, also its
    bounding box). The bounding box of a frame is that of its visible landmarks, score 1.
    Non-finite landmarks are written with confidence 0.

    Raises:
        LandmarkError: a wrong shape or a non-positive image size.
    """
    path = Path(path)
    _check_size(path, width, height)
    lmk = np.asarray(lmk, dtype=np.float64)
    if lmk.ndim != 3 or lmk.shape[-1] != 3:
        raise LandmarkError(f"{path}: landmarks must be (T, L, 3), got {lmk.shape}")
    out = lmk.copy()
    bad = ~np.isfinite(out).all(-1)
    out[bad] = 0.0
    out[..., 0] /= width
    out[..., 1] /= height
    vis = out[..., 2] > 0
    face = vis.any(1)
    xy = out[..., :2]
    lo = np.where(vis[..., None], xy, np.inf).min(1)
    hi = np.where(vis[..., None], xy, -np.inf).max(1)
    bbox = np.full((len(out), 5), -1.0)
    bbox[face] = np.concatenate([lo[face], hi[face], np.ones((int(face.sum()), 1))], 1)
    out[~face] = -1.0
    return atomic_savez(path, face_landmark_2d=out.astype(np.float32), bounding_box=bbox.astype(np.float32))
