"""Real spherical harmonics colours up to degree 3 (3DGS / gsplat convention).

Coefficients are laid out ``(N, K, 3)`` with ``K = (degree + 1) ** 2`` as in gsplat >= 1.0
(``colors`` argument of ``gsplat.rasterization`` with ``sh_degree``); the colour is
``max(sum_k c_k Y_k(d) + 0.5, 0)`` for the unit direction ``d`` from camera to Gaussian.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["eval_sh", "SH_C0", "rgb_to_sh", "sh_to_rgb", "num_sh_bases"]

SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient giving colour ``rgb`` (the inverse of degree-0 evaluation)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: Tensor) -> Tensor:
    return dc * SH_C0 + 0.5


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate SH colours.

    Args:
        degree: 0..3.
        coeffs: ``(..., K, 3)`` with ``K >= (degree + 1) ** 2``.
        dirs: ``(..., 3)`` view directions (normalised here).

    Returns:
        ``(..., 3)`` colours, ``clamp_min(sum + 0.5, 0)``.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    if coeffs.shape[-2] < num_sh_bases(degree):
        raise ValueError(f"degree {degree} needs {num_sh_bases(degree)} coefficients, got {coeffs.shape[-2]}")
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    out = SH_C0 * coeffs[..., 0, :]
    if degree >= 1:
        out = out - _C1 * y * coeffs[..., 1, :] + _C1 * z * coeffs[..., 2, :] - _C1 * x * coeffs[..., 3, :]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out = (out + _C2[0] * xy * coeffs[..., 4, :] + _C2[1] * yz * coeffs[..., 5, :]
               + _C2[2] * (2 * zz - xx - yy) * coeffs[..., 6, :] + _C2[3] * xz * coeffs[..., 7, :]
               + _C2[4] * (xx - yy) * coeffs[..., 8, :])
        if degree >= 3:
            out = (out + _C3[0] * y * (3 * xx - yy) * coeffs[..., 9, :] + _C3[1] * xy * z * coeffs[..., 10, :]
                   + _C3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
                   + _C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
                   + _C3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :]
                   + _C3[5] * z * (xx - yy) * coeffs[..., 14, :] + _C3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :])
    return (out + 0.5).clamp_min(0.0)
