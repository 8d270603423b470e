"""EWA projection of 3D Gaussians to screen space with gsplat 1.5.3's conventions (pure torch).

Source: Zwicker et al. 2002 (EWA splatting); 3D Gaussian Splatting (Kerbl et al. 2023);
gsplat 1.5.3 ``fully_fused_projection`` (pinhole, classic mode): camera-space culling at
``near``, the Jacobian evaluated at the mean clamped to 1.3x the field of view,
``eps2d = 0.3`` added to the 2D covariance, pixel centres at integer + 0.5, and the
screen-space extent of :func:`screen_radii`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..quaternion import quat_to_matrix

__all__ = ["Projected", "project_gaussians", "screen_radii", "EPS2D", "NEAR_PLANE", "FAR_PLANE", "EXTENT_SIGMAS",
           "ALPHA_MIN"]

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EXTENT_SIGMAS = 3.33  # gsplat's extent: beyond 3.33 sigma, alpha < 1/255 for any opacity <= 1
ALPHA_MIN = 1.0 / 255.0


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
    eps2d: float = EPS2D, near: float = NEAR_PLANE, far: float = FAR_PLANE, cov3d: Tensor | None = None,
) -> Projected:
    """Project Gaussians into one camera.

    Args:
        means: ``(N, 3)`` world positions (metres).
        quats: ``(N, 4)`` wxyz rotations (need not be normalised).
        scales: ``(N, 3)`` activated standard deviations (metres).
        viewmat: ``(4, 4)`` OpenCV world-to-camera.
        K: ``(3, 3)`` pinhole intrinsics in pixels.
        width, height: image size.
        cov3d: ``(N, 3, 3)`` :func:`covariance_3d` of ``quats`` and ``scales`` when the caller
            already has it (it does not depend on the camera: computed once for ``C`` cameras).

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
    cov_c = R @ (covariance_3d(quats, scales) if cov3d is None else cov3d) @ R.T
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


def screen_radii(proj: Projected, opacities: Tensor, width: int, height: int, opacity_aware: bool = True) -> Tensor:
    """gsplat 1.5.3's screen-space extent ``radii (N, 2)`` int32 of projected Gaussians.

    Per axis ``ceil(e * sqrt(cov2d_xx))`` and ``ceil(e * sqrt(cov2d_yy))`` (pixels, ``eps2d``
    included) with ``e = min(3.33, sqrt(2 ln(255 o)))`` as gsplat's CUDA projection computes
    it when given the opacities (``opacity_aware``; Gaussians with ``o < 1/255`` are culled),
    or ``e = 3.33`` as its pure-torch reference does. Both extents hold every pixel whose
    alpha can reach 1/255. Radii are 0 for Gaussians that are invalid (behind ``near``,
    beyond ``far``, degenerate) or whose extent box lies entirely off the image
    (``x + r <= 0``, ``x - r >= width``, likewise in y).

    Args:
        proj: :class:`Projected` of one camera; opacities: ``(N,)`` activated.
    """
    with torch.no_grad():
        cov = proj.cov2d.detach()
        ext = torch.full_like(cov[:, 0], EXTENT_SIGMAS)
        valid = proj.valid
        if opacity_aware:
            o = opacities.detach().to(cov.dtype)
            valid = valid & (o >= ALPHA_MIN)
            ext = torch.minimum(ext, torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_MIN) / ALPHA_MIN)))
        r = torch.ceil(ext[:, None] * cov[:, [0, 2]].clamp_min(0).sqrt())
        m = proj.means2d.detach()
        on_image = ((m[:, 0] + r[:, 0] > 0) & (m[:, 0] - r[:, 0] < width) & (m[:, 1] + r[:, 1] > 0)
                    & (m[:, 1] - r[:, 1] < height) & torch.isfinite(m).all(-1))
        keep = valid & on_image & (r > 0).any(-1)
        return torch.where(keep[:, None], r, torch.zeros_like(r)).to(torch.int32)
