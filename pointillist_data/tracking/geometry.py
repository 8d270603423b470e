"""Multi-view geometry for tracking initialisation: triangulation, Umeyama, look-at pose."""

from __future__ import annotations

import numpy as np
import torch

from ..capture.camera import Camera

__all__ = ["triangulate", "umeyama", "rigid_to_flame", "look_at_rotation", "laplacian_matrix", "with_focal_scale"]


def triangulate(cams: list[Camera], uv: np.ndarray, conf: np.ndarray, min_views: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Linear (DLT) triangulation of ``L`` points seen by ``C`` cameras.

    Args:
        cams: ``C`` cameras.
        uv: ``(C, L, 2)`` pixel coordinates; conf: ``(C, L)`` weights (0 = not seen).

    Returns:
        ``(X (L, 3), ok (L,))`` world points and whether at least ``min_views`` saw them.
    """
    P = np.stack([c.K @ c.world_to_cam[:3] for c in cams])  # (C, 3, 4)
    L = uv.shape[1]
    X = np.zeros((L, 3))
    ok = (conf > 0).sum(0) >= min_views
    for j in np.flatnonzero(ok):
        rows = []
        for c in np.flatnonzero(conf[:, j] > 0):
            w = conf[c, j]
            rows.append(w * (uv[c, j, 0] * P[c, 2] - P[c, 0]))
            rows.append(w * (uv[c, j, 1] * P[c, 2] - P[c, 1]))
        _, _, vt = np.linalg.svd(np.asarray(rows))
        X[j] = vt[-1, :3] / vt[-1, 3]
    return X, ok


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991); returns ``(R, t, s)``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(b.T @ a / len(src))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / a.var(0).sum()) if with_scale else 1.0
    return R, mu_d - s * R @ mu_s, s


def rigid_to_flame(R: np.ndarray, t: np.ndarray, root_joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLAME ``rotation`` (axis-angle) and ``translation`` for the rigid map ``v -> R v + t``.

    FLAME rotates about the root joint ``J0`` and adds the translation after skinning:
    ``v' = R (v - J0) + J0 + translation``, so ``translation = R J0 + t - J0``.
    """
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec(), R @ root_joint + t - root_joint


def look_at_rotation(cam: Camera, head_pos: np.ndarray) -> np.ndarray:
    """Rotation taking FLAME's frame (+z face, +y up) to face ``cam`` from ``head_pos``."""
    z = cam.center - head_pos
    z /= np.linalg.norm(z)
    up = -cam.world_to_cam[1, :3]  # camera y is down
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], 1)


def laplacian_matrix(faces: np.ndarray, num_vertices: int) -> torch.Tensor:
    """Uniform graph Laplacian ``L = I - D^-1 A`` as a sparse ``(V, V)`` tensor."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(np.concatenate([e, e[:, ::-1]]), axis=1), axis=0)
    e = np.concatenate([e, e[:, ::-1]])
    deg = np.bincount(e[:, 0], minlength=num_vertices).clip(1)
    idx = np.concatenate([e.T, np.stack([np.arange(num_vertices)] * 2)], 1)
    val = np.concatenate([-1.0 / deg[e[:, 0]], np.ones(num_vertices)])
    return torch.sparse_coo_tensor(torch.as_tensor(idx), torch.as_tensor(val, dtype=torch.float32),
                                   (num_vertices, num_vertices), check_invariants=True).coalesce()


def with_focal_scale(cam: Camera, s: float) -> Camera:
    """The camera with its focal lengths (not its principal point) scaled by ``s``."""
    K = cam.K.copy()
    K[0, 0] *= s
    K[1, 1] *= s
    return Camera(cam.world_to_cam, K, cam.width, cam.height, cam.serial)
