"""EWA projection of 3D Gaussians to screen space with gsplat's conventions (pure torch).

Source: Zwicker et al. 2002 (EWA splatting); 3D Gaussian Splatting (Kerbl et al. 2023);
gsplat's ``fully_fused_projection`` (classic mode): camera-space culling at ``near``,
the Jacobian evaluated at the mean clamped to 1.3x the field of view, ``eps2d = 0.3``
added to the 2D covariance, and pixel centres at integer + 0.5.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..quaternion import quat_to_matrix

__all__ = ["Projected", "project_gaussians", "EPS2D", "NEAR_PLANE", "FAR_PLANE"]

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10


class Projected(NamedTuple):
    """Screen-space Gaussians of one camera (all ``N`` rows; ``valid`` marks the kept ones).

    means2d ``(N, 2)`` pixels; conics ``(N, 3)`` (a, b, c of the inverse 2D covariance);
    cov2d ``(N, 3)`` (xx, xy, yy incl. eps2d); depths ``(N,)`` camera z (metres);
    valid ``(N,)`` bool.
    """

    means2d: Tensor
    conics: Tensor
    cov2d: Tensor
    depths: Tensor
    valid: Tensor


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances ``(N, 3, 3) = R S S^T R^T`` from wxyz ``quats (N, 4)`` and ``scales (N, 3)``."""
    R = quat_to_matrix(quats)
    M = R * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
    eps2d: float = EPS2D, near: float = NEAR_PLANE, far: float = FAR_PLANE,
) -> Projected:
    """Project Gaussians into one camera.

    Args:
        means: ``(N, 3)`` world positions (metres).
        quats: ``(N, 4)`` wxyz rotations (need not be normalised).
        scales: ``(N, 3)`` activated standard deviations (metres).
        viewmat: ``(4, 4)`` OpenCV world-to-camera.
        K: ``(3, 3)`` pinhole intrinsics in pixels.
        width, height: image size.

    Returns:
        :class:`Projected`. Gaussians behind ``near``, beyond ``far`` or with a degenerate 2D
        covariance are marked invalid (their other values are finite but meaningless).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = means @ R.T + t
    x, y, z = pc.unbind(-1)
    valid = (z > near) & (z < far)
    zs = torch.where(valid, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_xn), lim_xp)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_yn), lim_yp)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [torch.stack([fx / zs, zero, -fx * tx / zs**2], -1), torch.stack([zero, fy / zs, -fy * ty / zs**2], -1)], -2
    )  # (N, 2, 3)
    cov_c = R @ covariance_3d(quats, scales) @ R.T
    cov2 = J @ cov_c @ J.transpose(-1, -2)
    a = cov2[:, 0, 0] + eps2d
    b = cov2[:, 0, 1]
    c = cov2[:, 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    return Projected(means2d, conics, torch.stack([a, b, c], -1), z, valid)
