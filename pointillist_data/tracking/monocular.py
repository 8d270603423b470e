"""Tracking a monocular video (``pointillist track --video``), streamed.

Landmarks are detected one decoded frame at a time (:func:`~.landmarks.detect_frames`: the
face detector first, then the face mesh on a crop around the face, so a face ~20 pixels wide
or more in a 1080p frame is found), the frames go to a disk cache
(:func:`~.stage.monocular_data`), and the tracker refines a focal length from a guess. Peak
memory is a few frames plus the tracker's state, whatever the video's length.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..capture.landmarks_io import LandmarkError, load_landmarks
from ..capture.selection import CaptureSelection
from ..capture.video import iter_video, video_info
from ..errors import InputError
from ..flame.asset import FlameAsset
from ..progress import Progress
from .config import TrackingConfig
from .landmarks import NO_FACE_HINT, MediaPipeDetector, detect_frames
from .stage import monocular_data, run_tracking

__all__ = ["track_video", "video_landmarks"]


def video_landmarks(video: str | Path, frames: list[int], size: tuple[int, int], landmarks: str | Path | None = None,
                    crop: tuple[float, float, float, float] | None = None,
                    progress: Progress | None = None) -> tuple[np.ndarray, list[int]]:
    """Landmarks ``(T, L, 3)`` of the selected ``frames`` in pixels of frames read at
    ``size = (W, H)``, and the frames without a face.

    Args:
        landmarks: a VHAP landmark npz (normalised ``x / w``, ``y / h``) over the whole
            video or over the selected frames; default: MediaPipe.
        crop: ``(x0, y0, x1, y1)`` pixels of the video where the detector looks.

    Raises:
        InputError: no face in any frame (the hint suggests ``--crop`` / ``--scale``);
        LandmarkError: a landmark file whose frame count fits neither.
    """
    n, h0, w0 = video_info(video)
    sx, sy = size[0] / w0, size[1] / h0
    if landmarks is not None:
        lm = load_landmarks(landmarks, w0, h0)  # pixels of the video, then of the frames read
        if len(lm) == n and len(frames) != n:
            lm = lm[frames]
        elif len(lm) != len(frames):
            raise LandmarkError(f"{landmarks}: {len(lm)} frames of landmarks for {len(frames)} selected frames of "
                                f"{video} ({n} in the video)")
        lm[..., 0] *= sx
        lm[..., 1] *= sy
        missing = [f for f, row in zip(frames, lm, strict=True) if not (row[:, 2] > 0).any()]
    else:
        det = MediaPipeDetector(crop=None if crop is None else (crop[0] * sx, crop[1] * sy, crop[2] * sx, crop[3] * sy))
        lm, missing = detect_frames(iter_video(video, frames, size), det, len(frames), f"landmarks {Path(video).name}",
                                    progress)
    if len(missing) == len(frames):
        raise InputError(str(video), f"no face found in any of the {len(frames)} frame(s) read at "
                         f"{size[0]}x{size[1]}", hint=NO_FACE_HINT)
    return lm, missing


def track_video(video: str | Path, asset: FlameAsset, out: str | Path, config: TrackingConfig | None = None,
                selection: CaptureSelection | None = None, landmarks: str | Path | None = None,
                focal: float | None = None, crop: tuple[float, float, float, float] | None = None,
                progress: Progress | None = None) -> dict:
    """Track a monocular video and write the tracking outputs to ``out`` (see :mod:`.stage`).

    Args:
        selection: frames and scale (default: every frame at the video's size).
        landmarks: landmark npz instead of MediaPipe; focal: focal guess in pixels of the
            frames read; crop: where the detector looks (pixels of the video).

    Returns:
        The tracking record, with ``source``, ``no_face`` (frames without a face, flagged)
        and ``selection``.
    """
    sel = selection or CaptureSelection()
    n, h0, w0 = video_info(video)
    frames = sel.frame_indices(n)
    s = min(1.0, sel.effective_scale(1.0))
    size = (w0, h0) if s >= 1 else (max(2, round(w0 * s)), max(2, round(h0 * s)))
    t0 = time.perf_counter()
    lm, missing = video_landmarks(video, frames, size, landmarks, crop, progress)
    data = monocular_data(video, lm, focal, frames=frames, scale=s, cache=out, progress=progress)
    cfg = config or TrackingConfig()
    cfg.optimize_focal = True
    cfg.optimize_static_offset = False
    try:
        return run_tracking(data, asset, out, cfg, progress, {
            "source": str(video), "selection": sel.to_dict(), "image_size": list(size),
            "no_face": [f"{video}: no face in frame {f}" for f in missing],
            "landmarks_s": round(time.perf_counter() - t0, 2)})
    finally:
        data.close()
