"""FLAME shape and pose from one portrait (used to condition generation).

MediaPipe landmarks (face detection, then the face mesh on a crop around the face), mapped to FLAME through the MediaPipe embedding, fitted with
the tracker on a single frame and a single camera whose focal length is refined from a
guess, under identity and expression priors (stronger than for multi-view sequences,
since one view constrains depth weakly).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..capture.camera import Camera
from ..flame.asset import FlameAsset
from ..flame.params import FlameParams
from ..progress import Progress
from .config import TrackingConfig
from .landmarks import NO_FACE_HINT, LandmarkDetector, MediaPipeDetector, to_rgb
from .tracker import FlameTracker, TrackingData, TrackingError, TrackingResult

__all__ = ["SingleImageFit", "fit_single_image", "track_image", "SINGLE_IMAGE_CONFIG"]

SINGLE_IMAGE_CONFIG = TrackingConfig(first_frame_iters=500, global_iters=150, render_cameras=0,
                                     optimize_static_offset=False, optimize_focal=True, w_shape=2e-2, w_expr=2e-2,
                                     w_pose=0.2, lr_shape=0.03)


@dataclass
class SingleImageFit:
    """The fit: ``params`` (one frame), the refined ``camera``, the detected ``landmarks (L, 3)``,
    the mean reprojection error in pixels and as a fraction of the inter-ocular distance, and
    the tracker's ``data`` and ``result`` (for :func:`write_tracking_outputs`)."""

    params: FlameParams
    camera: Camera
    landmarks: np.ndarray
    error_px: float
    error_interocular: float
    data: TrackingData | None = None
    result: TrackingResult | None = None


def fit_single_image(image: np.ndarray, asset: FlameAsset, detector: LandmarkDetector | None = None,
                     config: TrackingConfig | None = None, landmarks: np.ndarray | None = None,
                     checkpoint: str | Path | None = None, progress: Progress | None = None) -> SingleImageFit:
    """Fit FLAME to a portrait ``image`` (``(H, W, 3)`` uint8; grey ``(H, W)`` and RGBA
    ``(H, W, 4)`` are converted to RGB, see :func:`to_rgb`).

    Args:
        detector: landmark detector (default: MediaPipe face detection, then the face mesh on
            a crop around the face, so small faces in large images are found).
        landmarks: ``(L, 3)`` landmarks to use instead of running a detector.
        checkpoint: folder of the tracker's checkpoint (:meth:`FlameTracker.track`; ``None``: none).
        progress: reporter of the tracker's passes.

    Raises:
        TrackingError: no face found (the message suggests ``--crop``).
        ImportError: MediaPipe missing and no landmarks given.
    """
    image = to_rgb(image)
    H, W = image.shape[:2]
    if landmarks is None:
        landmarks = (detector or MediaPipeDetector()).detect(image)
        if landmarks is None:
            raise TrackingError(f"no face found in the {W}x{H} image").with_hint(NO_FACE_HINT)
    f = float(max(W, H))
    cam = Camera(np.eye(4), [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], W, H, "image")
    data = TrackingData([cam], landmarks[None, None].astype(np.float32), image[None, None], None, ["00000"])
    cfg = replace(config or SINGLE_IMAGE_CONFIG)
    res = FlameTracker(asset, cfg).track(data, progress=progress, checkpoint=checkpoint)
    err = res.metrics["landmark_error_px_mean"]
    if len(landmarks) >= 468:  # MediaPipe outer eye corners
        iod = float(np.linalg.norm(landmarks[33, :2] - landmarks[263, :2]))
    else:  # iBUG-68 outer eye corners
        iod = float(np.linalg.norm(landmarks[36, :2] - landmarks[45, :2]))
    return SingleImageFit(res.params, res.cameras[0], landmarks, err, err / max(iod, 1e-6), data, res)


def track_image(image: np.ndarray, asset: FlameAsset, out: str | Path, config: TrackingConfig | None = None,
                detector: LandmarkDetector | None = None, source: str = "image") -> dict:
    """``pointillist track --image``: the single-image fit written like every tracking run
    (``tracked_flame_params_<E>.npz``, ``export/``, ``config.json``, ``overlay.png``,
    ``tracking_record.json``; see :mod:`.stage`); returns the record.

    Raises:
        TrackingError: no face found.
    """
    from .stage import write_tracking_outputs

    cfg = replace(config or SINGLE_IMAGE_CONFIG)
    t0 = time.perf_counter()
    fit = fit_single_image(image, asset, detector, cfg, checkpoint=Path(out) / "checkpoint")
    return write_tracking_outputs(out, asset, fit.data, fit.result, cfg, {
        "wall_s": round(time.perf_counter() - t0, 2), "source": source,
        "error_interocular": fit.error_interocular, "image_size": [fit.camera.width, fit.camera.height]})
