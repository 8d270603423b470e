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
from ..capture.matting_spec import MattingError
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

__all__ = ["track_video", "video_landmarks", "face_crop_data", "read_plate", "context_alpha"]


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


def read_plate(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A video's background plate (an image of the empty scene) as ``(H, W, 3)`` uint8 RGB,
    resized to the frames read, ``size = (W, H)``, as the frames are (bilinear).

    Raises:
        InputError: unreadable, or of another aspect ratio than the frames (more than 1 %).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(str(path), f"background plate unreadable ({e})") from None
    w, h = rgb.size
    if abs(w / h - size[0] / size[1]) > 0.01 * size[0] / size[1]:
        raise InputError(str(path), f"background plate is {w}x{h}, the video's frames {size[0]}x{size[1]} "
                         "(another aspect ratio)")
    return np.asarray(rgb.resize(tuple(size), Image.BILINEAR) if (w, h) != tuple(size) else rgb, dtype=np.uint8)


MATTING_CONTEXT = 3.0  # the matting window's side, in face-crop sides


def context_alpha(matter, frame: np.ndarray, plate: np.ndarray | None, crop: FaceCrop,
                  context: float = MATTING_CONTEXT) -> np.ndarray:
    """Alpha ``(S, S)`` float32 in [0, 1] of the face crop ``crop`` (``S = crop.size``) of one
    ``(H, W, 3)`` uint8 frame, matted on a window around it.

    The face fills most of its crop, and background subtraction estimates its threshold from
    the frame's median difference (:func:`~pointillist_data.capture.matting.robust_background_alpha`:
    a majority of background is assumed; on the crop alone it finds nothing), while
    segmentation networks expect a head with shoulders and scene around it. So ``matter`` runs
    on the window ``context`` crop sides wide about the crop, cut to the frame, resampled at the
    crop's scale (never enlarged: ``min(1, S / side)``), so its cost is bounded by the crop size
    (at most ``(context S)^2`` pixels), not the video's resolution; its alpha is then sampled
    (bilinear, pixel centres at +0.5) at the crop's pixel centres, 0 outside the frame.

    Args:
        matter: a :class:`~pointillist_data.capture.matting.Matter`; plate: the ``(H, W, 3)``
            background plate for methods that need one, else ``None``.
    """
    from PIL import Image
    from scipy import ndimage

    H, W = frame.shape[:2]
    half = (context - 1) / 2 * crop.side
    wx0, wy0 = max(0, int(np.floor(crop.x0 - half))), max(0, int(np.floor(crop.y0 - half)))
    wx1 = min(W, int(np.ceil(crop.x0 + crop.side + half)))
    wy1 = min(H, int(np.ceil(crop.y0 + crop.side + half)))
    s = min(1.0, crop.size / crop.side)
    ww, wh = max(8, round((wx1 - wx0) * s)), max(8, round((wy1 - wy0) * s))

    def window(img: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.ascontiguousarray(img[wy0:wy1, wx0:wx1]))
        return np.asarray(im.resize((ww, wh), Image.BILINEAR) if im.size != (ww, wh) else im)

    a = matter(window(frame), None if plate is None else window(plate))
    # crop pixel i's centre is frame x = x0 + (i + 0.5) side / S; window pixel j's centre is
    # at wx0 + (j + 0.5) (wx1 - wx0) / ww
    i = (np.arange(crop.size) + 0.5) * crop.side / crop.size
    u = (crop.x0 + i - wx0) * ww / (wx1 - wx0) - 0.5
    v = (crop.y0 + i - wy0) * wh / (wy1 - wy0) - 0.5
    vv, uu = np.meshgrid(v, u, indexing="ij")
    out = ndimage.map_coordinates(a.astype(np.float32), [vv, uu], order=1, mode="constant", cval=0.0)
    return np.clip(out, 0, 1).astype(np.float32)


def face_crop_data(video: str | Path, landmarks: np.ndarray, frames: list[int], size: tuple[int, int],
                   config: TrackingConfig, cache: FrameCache, focal: float | None = None,
                   progress: Progress | None = None, matting: str | None = None,
                   background: str | Path | None = None) -> tuple[TrackingData, FaceCrop | None]:
    """One-camera :class:`TrackingData` of a video on its face crop (:mod:`.face_crop`).

    The video camera sits at the origin looking along +z with focal ``focal`` (default the
    frames' larger side, a ~53 degree field of view) and a centred principal point; frames
    are decoded one at a time at ``size``, cut to the crop, resampled to
    ``config.face_crop_size`` pixels and stored as uint8 in ``cache`` (the caller closes it).

    Args:
        landmarks: ``(T, L, 3)`` pixels of the frames read at ``size = (W, H)`` and confidence.
        frames: the ``T`` frame indices of the video.
        matting: a matting spec (:mod:`pointillist_data.capture.matting`) whose alpha becomes
            the data's masks ``(T, 1, S, S)`` uint8, matted on a window about the crop
            (:func:`context_alpha`), frame by frame in time order; ``None``: no masks (no
            silhouette term, the photometric term over the whole crop).
        background: the plate image for a method that needs one (:func:`read_plate`).

    Returns:
        The data (camera, landmarks, images and masks in pixels of the crop) and the crop, or
        the whole frames and ``None`` when ``config.face_crop_size`` is 0.

    Raises:
        LandmarkError: landmarks of another frame count; VideoError: undecodable frames;
        MattingError: a method that needs a plate without ``background``, unreadable weights;
        InputError: an unreadable plate.
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
    masks, matter, plate = None, None, None
    if matting is not None:
        from ..capture.matting import make_matter

        matter = make_matter(matting)
        if matter.needs_background:
            if background is None:
                raise MattingError(f"matting: {matter.method} needs the video's background plate (none given)")
            plate = read_plate(background, (W, H))
        masks = cache.array("masks", (len(frames), 1, cam.height, cam.width))
    what = f"face crop {crop.side} px -> {crop.size} px" if crop else "whole frames"
    what += f", matting {matter.method}" if matter else ""
    with (progress or NULL_PROGRESS).task(f"decoding {Path(video).name} at {W}x{H} ({what})", total=len(frames)) as task:
        for k, (_, img) in enumerate(iter_video(video, frames, (W, H))):
            im = crop.image(img) if crop else img
            images[k, 0] = im
            if matter is not None:
                a = context_alpha(matter, img, plate, crop) if crop else matter(img, plate)
                masks[k, 0] = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
            task.advance()
    return TrackingData([cam], landmarks[:, None], images, masks, [f"{t:05d}" for t in frames], cache=cache), crop


def track_video(video: str | Path, asset: FlameAsset, out: str | Path, config: TrackingConfig | None = None,
                selection: CaptureSelection | None = None, landmarks: str | Path | None = None,
                focal: float | None = None, crop: tuple[float, float, float, float] | None = None,
                progress: Progress | None = None, matting: str | None = None, background: str | Path | None = None,
                checkpoint: str | Path | None = None) -> dict:
    """Track a monocular video and write the tracking outputs to ``out`` (see :mod:`.stage`):
    landmarks on the frames read, then FLAME on the face crop (``config.face_crop_size``), the
    focal length refined. The frame cache (``out/.frames-*``) is removed on any exit:
    exceptions, Ctrl-C, and SIGTERM (raised as ``SystemExit(143)`` meanwhile).

    Args:
        selection: frames and scale (default: every frame at the video's size).
        landmarks: landmark npz instead of MediaPipe; focal: focal guess in pixels of the
            frames read; crop: where the detector looks (pixels of the video).
        matting, background: masks of the face crop by this matting spec, with this plate for
            a method that needs one (:func:`face_crop_data`); default none.
        checkpoint: folder of the tracker's checkpoint (default ``out/checkpoint``): a re-run
            with the same inputs and configuration continues its global pass from it
            (``pointillist run`` keeps it beside the attempt's folder, so it outlives one).

    Returns:
        The tracking record: ``metrics`` (pixels of the face crop, and
        ``landmark_error_video_px_mean`` in pixels of the frames read,
        ``landmark_error_iod_pct``: percent of the inter-ocular distance), ``source``,
        ``no_face`` (frames without a face, flagged), ``selection``, ``face_crop`` (the box in
        pixels of the frames read, or ``None``) and ``video_camera`` (``K`` of the frames read
        after the focal refinement), ``matting`` (the spec, or ``None``).
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
            return _track(video, asset, out, cfg, sel, frames, size, landmarks, focal, crop, progress, cache, t0,
                          matting, background, checkpoint)
        finally:
            cache.close()


def _track(video, asset, out, cfg, sel, frames, size, landmarks, focal, crop, progress, cache, t0,
           matting=None, background=None, checkpoint=None) -> dict:
    """The work of :func:`track_video` once the cache exists (the caller removes it)."""
    lm, missing = video_landmarks(video, frames, size, landmarks, crop, progress)
    t_lm = time.perf_counter() - t0
    data, box = face_crop_data(video, lm, frames, size, cfg, cache, focal, progress, matting, background)
    res = FlameTracker(asset, cfg).track(data, progress, out / "checkpoint" if checkpoint is None else Path(checkpoint))
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
        "no_face": [f"{video}: no face in frame {f}" for f in missing], "landmarks_s": round(t_lm, 2),
        "matting": matting})
