"""FLAME shape and pose from one portrait (used to condition generation).

MediaPipe face-mesh landmarks, mapped to FLAME through the MediaPipe embedding, fitted with
the tracker on a single frame and a single camera whose focal length is refined from a
guess, under identity and expression priors (stronger than for multi-view sequences,
since one view constrains depth weakly).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..capture.camera import Camera
from ..flame.asset import FlameAsset
from ..flame.params import FlameParams
from .config import TrackingConfig
from .landmarks import LandmarkDetector, MediaPipeDetector
from .tracker import FlameTracker, TrackingData, TrackingError

__all__ = ["SingleImageFit", "fit_single_image", "SINGLE_IMAGE_CONFIG"]

SINGLE_IMAGE_CONFIG = TrackingConfig(first_frame_iters=500, global_iters=150, render_cameras=0,
                                     optimize_static_offset=False, optimize_focal=True, w_shape=2e-2, w_expr=2e-2,
                                     w_pose=0.2, lr_shape=0.03)


@dataclass
class SingleImageFit:
    """The fit: ``params`` (one frame), the refined ``camera``, the detected ``landmarks (L, 3)``
    and the mean reprojection error in pixels and as a fraction of the inter-ocular distance."""

    params: FlameParams
    camera: Camera
    landmarks: np.ndarray
    error_px: float
    error_interocular: float


def fit_single_image(image: np.ndarray, asset: FlameAsset, detector: LandmarkDetector | None = None,
                     config: TrackingConfig | None = None, landmarks: np.ndarray | None = None) -> SingleImageFit:
    """Fit FLAME to a portrait ``image (H, W, 3)`` uint8.

    Args:
        detector: landmark detector (default: MediaPipe; needs the ``landmarks`` extra).
        landmarks: ``(L, 3)`` landmarks to use instead of running a detector.

    Raises:
        TrackingError: no face found.
        ImportError: MediaPipe missing and no landmarks given.
    """
    H, W = image.shape[:2]
    if landmarks is None:
        landmarks = (detector or MediaPipeDetector()).detect(image)
        if landmarks is None:
            raise TrackingError("no face found in the image")
    f = float(max(W, H))
    cam = Camera(np.eye(4), [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], W, H, "image")
    data = TrackingData([cam], landmarks[None, None].astype(np.float32), image[None, None], None, ["00000"])
    cfg = replace(config or SINGLE_IMAGE_CONFIG)
    res = FlameTracker(asset, cfg).track(data)
    err = res.metrics["landmark_error_px_mean"]
    if len(landmarks) >= 468:  # MediaPipe outer eye corners
        iod = float(np.linalg.norm(landmarks[33, :2] - landmarks[263, :2]))
    else:  # iBUG-68 outer eye corners
        iod = float(np.linalg.norm(landmarks[36, :2] - landmarks[45, :2]))
    return SingleImageFit(res.params, res.cameras[0], landmarks, err, err / max(iod, 1e-6))
