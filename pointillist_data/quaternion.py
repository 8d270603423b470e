"""Quaternion and rotation helpers (wxyz, Hamilton product), batched and differentiable.

Conventions follow gsplat and GaussianAvatars: a quaternion ``q = (w, x, y, z)`` need not
be normalised on input; functions that turn it into a rotation normalise it first.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["quat_multiply", "quat_conjugate", "quat_to_matrix", "matrix_to_quat", "normalize_quat"]


def normalize_quat(q: Tensor, eps: float = 1e-12) -> Tensor:
    """``q / |q|`` for ``(..., 4)`` quaternions."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of ``(..., 4)`` wxyz quaternions (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_conjugate(q: Tensor) -> Tensor:
    """``(w, -x, -y, -z)``: the inverse of a unit quaternion."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` from ``(..., 4)`` wxyz quaternions (normalised first)."""
    w, x, y, z = normalize_quat(q).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R: Tensor) -> Tensor:
    """wxyz unit quaternions ``(..., 4)`` with ``w >= 0`` from rotation matrices ``(..., 3, 3)``.

    Uses the numerically best of the four Shepperd candidates per matrix, so it is
    stable (and differentiable) for every rotation, including 180 degree ones.
    """
    m = R.reshape(R.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    diag4 = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    r = diag4.clamp_min(1e-12).sqrt()  # 2|w|, 2|x|, 2|y|, 2|z|
    cand = torch.stack(
        [
            torch.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, r[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    ) / (2.0 * r[..., None])
    best = diag4.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = normalize_quat(q)
    return torch.where(q[..., :1] < 0, -q, q)
