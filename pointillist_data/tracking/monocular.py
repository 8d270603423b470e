"""Tracking a monocular video (``pointillist track --video``), streamed.

Landmarks are detected one decoded frame at a time (:func:`~.landmarks.detect_frames`: the
face detector first, then the face mesh on a crop around the face, so a face ~20 pixels wide
or more in a 1080p frame is found); the tracker then works on a square face crop resampled to
``TrackingConfig.face_crop_size`` pixels (:mod:`.face_crop`), cached as uint8 on disk
(:func:`face_crop_data`), and refines a focal length from a guess. Peak memory is a few
decoded frames plus the tracker's state at the crop's size: it does not grow with the video's
length beyond the per-frame parameters, nor with its resolution.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..capture.camera import Camera
from ..capture.frames import FrameCache
from ..capture.landmarks_io import LandmarkError, load_landmarks
from ..capture.selection import CaptureSelection
from ..capture.video import iter_video, video_info
from ..errors import InputError
from ..flame.asset import FlameAsset
from ..progress import NULL_PROGRESS, Progress
from .config import TrackingConfig
from .face_crop import FaceCrop, face_crop_box
from .landmarks import NO_FACE_HINT, MediaPipeDetector, detect_frames
from .quality import tracking_quality
from .stage import write_tracking_outputs
from .tracker import FlameTracker, TrackingData

__all__ = ["track_video", "video_landmarks", "face_crop_data"]


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


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Within the block SIGTERM (``kill``, a scheduler's stop) raises ``SystemExit(143)``, so
    that ``finally`` clauses run (the frame cache is removed) as they do for Ctrl-C. Outside
    the main thread, or where SIGTERM already has a handler, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def face_crop_data(video: str | Path, landmarks: np.ndarray, frames: list[int], size: tuple[int, int],
                   config: TrackingConfig, cache: FrameCache, focal: float | None = None,
                   progress: Progress | None = None) -> tuple[TrackingData, FaceCrop | None]:
    """One-camera :class:`TrackingData` of a video on its face crop (:mod:`.face_crop`).

    The video camera sits at the origin looking along +z with focal ``focal`` (default the
    frames' larger side, a ~53 degree field of view) and a centred principal point; frames
    are decoded one at a time at ``size``, cut to the crop, resampled to
    ``config.face_crop_size`` pixels and stored as uint8 in ``cache`` (the caller closes it).

    Args:
        landmarks: ``(T, L, 3)`` pixels of the frames read at ``size = (W, H)`` and confidence.
        frames: the ``T`` frame indices of the video.

    Returns:
        The data (camera, landmarks and images in pixels of the crop) and the crop, or the
        whole frames and ``None`` when ``config.face_crop_size`` is 0.

    Raises:
        LandmarkError: landmarks of another frame count; VideoError: undecodable frames.
    """
    if len(landmarks) != len(frames):
        raise LandmarkError(f"{video}: {len(landmarks)} frames of landmarks for {len(frames)} frames read")
    W, H = size
    f = focal or float(max(W, H))
    cam = Camera(np.eye(4), [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], W, H, "video")
    crop = None
    if config.face_crop_size:
        crop = face_crop_box(landmarks, W, H, config.face_crop_size, config.face_crop_padding, (W / 2, H / 2))
        cam, landmarks = crop.camera(cam), crop.landmarks(landmarks)
    images = cache.array("images", (len(frames), 1, cam.height, cam.width, 3))
    what = f"face crop {crop.side} px -> {crop.size} px" if crop else "whole frames"
    with (progress or NULL_PROGRESS).task(f"decoding {Path(video).name} at {W}x{H} ({what})", total=len(frames)) as task:
        for k, (_, img) in enumerate(iter_video(video, frames, (W, H))):
            images[k, 0] = crop.image(img) if crop else img
            task.advance()
    return TrackingData([cam], landmarks[:, None], images, None, [f"{t:05d}" for t in frames], cache=cache), crop


def track_video(video: str | Path, asset: FlameAsset, out: str | Path, config: TrackingConfig | None = None,
                selection: CaptureSelection | None = None, landmarks: str | Path | None = None,
                focal: float | None = None, crop: tuple[float, float, float, float] | None = None,
                progress: Progress | None = None) -> dict:
    """Track a monocular video and write the tracking outputs to ``out`` (see :mod:`.stage`):
    landmarks on the frames read, then FLAME on the face crop (``config.face_crop_size``), the
    focal length refined. The frame cache (``out/.frames-*``) is removed on any exit:
    exceptions, Ctrl-C, and SIGTERM (raised as ``SystemExit(143)`` meanwhile).

    Args:
        selection: frames and scale (default: every frame at the video's size).
        landmarks: landmark npz instead of MediaPipe; focal: focal guess in pixels of the
            frames read; crop: where the detector looks (pixels of the video).

    Returns:
        The tracking record: ``metrics`` (pixels of the face crop, and
        ``landmark_error_video_px_mean`` in pixels of the frames read,
        ``landmark_error_iod_pct``: percent of the inter-ocular distance), ``source``,
        ``no_face`` (frames without a face, flagged), ``selection``, ``face_crop`` (the box in
        pixels of the frames read, or ``None``) and ``video_camera`` (``K`` of the frames read
        after the focal refinement).
    """
    sel = selection or CaptureSelection()
    n, h0, w0 = video_info(video)
    frames = sel.frame_indices(n)
    s = min(1.0, sel.effective_scale(1.0))
    size = (w0, h0) if s >= 1 else (max(2, round(w0 * s)), max(2, round(h0 * s)))
    cfg = replace(config or TrackingConfig(), optimize_focal=True, optimize_static_offset=False)
    progress = progress or NULL_PROGRESS
    where = f"a {cfg.face_crop_size}-pixel face crop" if cfg.face_crop_size else "whole frames"
    progress.log(f"track {Path(video).name}: {len(frames)} of {n} frames of {w0}x{h0} read at {size[0]}x{size[1]}; "
                 f"landmarks, then FLAME on {where}")
    t0 = time.perf_counter()
    out = Path(out)
    with _terminate_as_exit():
        cache = FrameCache(out)
        try:
            return _track(video, asset, out, cfg, sel, frames, size, landmarks, focal, crop, progress, cache, t0)
        finally:
            cache.close()


def _track(video, asset, out, cfg, sel, frames, size, landmarks, focal, crop, progress, cache, t0) -> dict:
    """The work of :func:`track_video` once the cache exists (the caller removes it)."""
    lm, missing = video_landmarks(video, frames, size, landmarks, crop, progress)
    t_lm = time.perf_counter() - t0
    data, box = face_crop_data(video, lm, frames, size, cfg, cache, focal, progress)
    res = FlameTracker(asset, cfg).track(data, progress, out / "checkpoint")
    err = res.metrics["landmark_error_px_mean"]
    res.metrics.update(tracking_quality(asset, data.landmarks[res.kept], err, res.params))
    cam = res.cameras[0]
    if box is not None:
        res.metrics["landmark_error_video_px_mean"] = err / box.scale
        cam = box.frame_camera(cam, *size)
    return write_tracking_outputs(out, asset, data, res, cfg, {
        "wall_s": round(time.perf_counter() - t0, 2), "source": str(video), "selection": sel.to_dict(),
        "image_size": list(size), "face_crop": None if box is None else box.to_dict(),
        "video_camera": {"K": np.round(cam.K, 4).tolist(), "width": size[0], "height": size[1]},
        "no_face": [f"{video}: no face in frame {f}" for f in missing], "landmarks_s": round(t_lm, 2)})
