"""Adaptive density control under the per-face bounds of AvatarPointillist (supplementary D).

Pure index logic, separate from the optimiser so it can be tested on its own:

* :func:`accumulate_view_gradients` - 3DGS / GaussianAvatars' densification statistics from
  a render's ``means2d`` gradient and its gsplat-style ``radii (C, N, 2)``, for both backends;
* :func:`select_densify` - which Gaussians clone or split: candidates above the gradient
  threshold, at most ``max_per_face - count`` per face (highest gradient first);
* :func:`select_prune` - which Gaussians are removed: candidates below the opacity
  threshold, never taking a face below ``min_per_face``, except that a face whose
  Gaussians are *all* transparent may be emptied when ``allow_empty`` is set.

Every face therefore holds 0 or between ``min_per_face`` and ``max_per_face`` Gaussians,
provided it did before.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["face_counts", "select_densify", "select_prune", "check_bounds", "accumulate_view_gradients"]


def accumulate_view_gradients(grad_accum: Tensor, grad_count: Tensor, means2d_grad: Tensor, radii: Tensor,
                              width: int, height: int) -> None:
    """Add one render's view-space gradient norms to the densification statistics, in place.

    As 3DGS' ``add_densification_stats``: for each camera ``c`` and each Gaussian visible
    in it, ``|d loss / d means2d|`` converted from pixels to NDC (times ``(W/2, H/2)``) is
    added to ``grad_accum`` and ``grad_count`` is incremented. Visible means
    ``(radii[c] > 0).all(-1)``, gsplat's rule, so Gaussians culled or entirely off the image
    are never counted; the CPU renderer returns the same ``radii`` as gsplat.

    Args:
        grad_accum: ``(N,)`` float; grad_count: ``(N,)``.
        means2d_grad: ``(C, N, 2)`` gradient of the render's ``meta["means2d"]`` (pixels).
        radii: ``(C, N, 2)`` int from the render's ``meta["radii"]``.
        width, height: image size.

    Raises:
        ValueError: ``radii`` or the gradient is not ``(C, N, 2)``.
    """
    if radii.dim() != 3 or radii.shape[-1] != 2 or means2d_grad.shape != radii.shape:
        raise ValueError(f"expected means2d grad and radii of shape (C, N, 2), got {tuple(means2d_grad.shape)} "
                         f"and {tuple(radii.shape)}")
    vis = (radii > 0).all(-1)
    ndc = means2d_grad * torch.tensor([width / 2, height / 2], dtype=means2d_grad.dtype, device=means2d_grad.device)
    norm = torch.where(vis, ndc.norm(dim=-1), torch.zeros((), dtype=ndc.dtype, device=ndc.device))
    grad_accum += norm.sum(0).to(grad_accum.dtype)
    grad_count += vis.sum(0).to(grad_count.dtype)


def face_counts(binding: Tensor, num_faces: int) -> Tensor:
    """``(F,)`` number of Gaussians bound to each face."""
    return torch.bincount(binding, minlength=num_faces)


def _rank_within_face(binding: Tensor, score: Tensor) -> Tensor:
    """0-based rank of each element among those of its face, by descending ``score``."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(binding[order], stable=True)]  # grouped by face, score-descending inside
    b = binding[order]
    start = torch.ones_like(b, dtype=torch.bool)
    start[1:] = b[1:] != b[:-1]
    idx = torch.arange(len(b), device=b.device)
    first = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), 0).values
    rank = torch.empty_like(idx)
    rank[order] = idx - first
    return rank


def select_densify(binding: Tensor, candidate: Tensor, score: Tensor, num_faces: int, max_per_face: int) -> Tensor:
    """Mask of candidates allowed to add one Gaussian (clone or split) within the face cap.

    Args:
        binding: ``(N,)`` face per Gaussian; candidate: ``(N,)`` bool; score: ``(N,)`` priority.

    Returns:
        ``(N,)`` bool, a subset of ``candidate``.
    """
    counts = face_counts(binding, num_faces)
    room = (max_per_face - counts).clamp_min(0)
    s = torch.where(candidate, score, torch.full_like(score, -float("inf")))
    rank = _rank_within_face(binding, s)
    return candidate & (rank < room[binding])


def select_prune(binding: Tensor, opacity: Tensor, threshold: float, num_faces: int, min_per_face: int,
                 allow_empty: bool) -> Tensor:
    """Mask of Gaussians to prune (see the module docstring).

    Args:
        binding: ``(N,)``; opacity: ``(N,)`` activated.
    """
    low = opacity < threshold
    counts = face_counts(binding, num_faces)
    n_low = torch.bincount(binding[low], minlength=num_faces)
    all_low = (n_low == counts) & (counts > 0)
    quota = (counts - min_per_face).clamp_min(0)  # how many may go while keeping the floor
    rank = _rank_within_face(binding, torch.where(low, -opacity, torch.full_like(opacity, -float("inf"))))
    prune = low & (rank < quota[binding])
    if allow_empty:
        prune |= all_low[binding]
    return prune


def check_bounds(binding: Tensor, num_faces: int, min_per_face: int, max_per_face: int) -> tuple[bool, dict]:
    """Whether every face holds 0 or between the bounds; also the count histogram."""
    c = face_counts(binding, num_faces)
    ok = bool(((c == 0) | ((c >= min_per_face) & (c <= max_per_face))).all())
    hist = torch.bincount(c).tolist()
    return ok, {"histogram": hist, "empty_faces": int((c == 0).sum()), "total": int(c.sum()),
                "max": int(c.max()), "min_nonempty": int(c[c > 0].min()) if (c > 0).any() else 0}
