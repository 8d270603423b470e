"""Per-face frames of a triangle mesh and the GaussianAvatars binding transforms.

Source: GaussianAvatars (Qian et al., CVPR 2024), section 3.1, and the paper's section 3.1;
the exact construction is the one written in the project's CONVENTIONS:

* ``a0 = n(v1 - v0)``, ``a1 = n(a0 x (v2 - v0))`` (the face normal), ``a2 = -n(a1 x a0)``;
  ``R = [a0 a1 a2]`` as columns (a proper rotation, ``det R = +1``);
* ``k = (|v1 - v0| + |a2 . (v2 - v0)|) / 2`` (mean of the triangle's base and height);
* ``T`` = the centroid.

A Gaussian bound to a face has local mean ``mu``, log-scale ``s`` and rotation ``q``; in the
global (FLAME or world) frame: ``mu' = k R mu + T``, ``scale' = k exp(s)``, ``q' = q_R * q``.
All functions work on any batch shape, in float32 or float64, and are differentiable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..quaternion import matrix_to_quat, quat_conjugate, quat_multiply

__all__ = ["FaceFrames", "face_frames", "local_to_global", "global_to_local"]


class FaceFrames(NamedTuple):
    """Frames of every face: ``R (..., F, 3, 3)``, ``k (..., F)``, ``T (..., F, 3)`` and
    ``q (..., F, 4)`` (``R`` as a wxyz quaternion)."""

    R: Tensor
    k: Tensor
    T: Tensor
    q: Tensor


def _n(v: Tensor, eps: float) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def face_frames(verts: Tensor, faces: Tensor, eps: float = 1e-12) -> FaceFrames:
    """Compute the frame of each face.

    Args:
        verts: ``(..., V, 3)`` vertex positions (metres).
        faces: ``(F, 3)`` int64 vertex indices.
        eps: floor on vector norms for degenerate faces.

    Returns:
        :class:`FaceFrames` with leading dims of ``verts`` and ``F`` faces.
    """
    tri = verts[..., faces, :]  # (..., F, 3, 3)
    v0, v1, v2 = tri.unbind(-2)
    e1, e2 = v1 - v0, v2 - v0
    a0 = _n(e1, eps)
    a1 = _n(torch.linalg.cross(a0, e2, dim=-1), eps)
    a2 = -_n(torch.linalg.cross(a1, a0, dim=-1), eps)
    R = torch.stack([a0, a1, a2], dim=-1)
    k = 0.5 * (e1.norm(dim=-1) + (a2 * e2).sum(-1).abs())
    T = tri.mean(-2)
    return FaceFrames(R, k, T, matrix_to_quat(R))


def local_to_global(
    frames: FaceFrames, binding: Tensor, means: Tensor, log_scales: Tensor | None = None, quats: Tensor | None = None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Place Gaussians bound to faces in the global frame.

    Args:
        frames: frames of shape ``(..., F, ...)``.
        binding: ``(N,)`` int64 face index per Gaussian.
        means: ``(..., N, 3)`` local positions (units of the face scale ``k``).
        log_scales: ``(..., N, 3)`` local log-scales, or ``None``.
        quats: ``(..., N, 4)`` local wxyz rotations, or ``None``.

    Returns:
        ``(means', scales', quats')``: global positions ``(..., N, 3)``, activated global
        scales ``k exp(s)`` and global wxyz quaternions ``q_R * q`` (``None`` where no input).
    """
    R = frames.R[..., binding, :, :]
    k = frames.k[..., binding]
    T = frames.T[..., binding, :]
    mu = k[..., None] * (R @ means[..., None]).squeeze(-1) + T
    sc = None if log_scales is None else k[..., None] * torch.exp(log_scales)
    qg = None if quats is None else quat_multiply(frames.q[..., binding, :], quats)
    return mu, sc, qg


def global_to_local(
    frames: FaceFrames, binding: Tensor, means: Tensor, scales: Tensor | None = None, quats: Tensor | None = None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Inverse of :func:`local_to_global`.

    Args:
        frames, binding: as in :func:`local_to_global`.
        means: ``(..., N, 3)`` global positions.
        scales: ``(..., N, 3)`` activated global scales (positive), or ``None``.
        quats: ``(..., N, 4)`` global wxyz rotations, or ``None``.

    Returns:
        ``(mu, log_scale, q)`` in the local frames of the bound faces.
    """
    R = frames.R[..., binding, :, :]
    k = frames.k[..., binding]
    T = frames.T[..., binding, :]
    mu = (R.transpose(-1, -2) @ (means - T)[..., None]).squeeze(-1) / k[..., None]
    ls = None if scales is None else torch.log(scales / k[..., None])
    q = None if quats is None else quat_multiply(quat_conjugate(frames.q[..., binding, :]), quats)
    return mu, ls, q
