"""``render_gaussians``: one call for the toolkit's CPU path and gsplat on CUDA."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .projection import covariance_3d, project_gaussians
from .sh import eval_sh
from .torch_backend import rasterize_camera

__all__ = ["render_gaussians", "RenderOutput", "gsplat_available"]

Backend = Literal["auto", "torch", "gsplat"]


class RenderOutput(dict):
    """``rgb (C, H, W, D)``, ``alpha (C, H, W, 1)``, ``depth (C, H, W, 1)``, ``meta`` (dict)."""

    @property
    def rgb(self) -> Tensor:
        return self["rgb"]

    @property
    def alpha(self) -> Tensor:
        return self["alpha"]

    @property
    def depth(self) -> Tensor:
        return self["depth"]

    @property
    def meta(self) -> dict:
        return self["meta"]


def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def _check(name: str, t: Tensor, shape: tuple) -> None:
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=False)):
        raise ValueError(f"render_gaussians: '{name}' expected shape {shape}, got {tuple(t.shape)}")


def render_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, backgrounds: Tensor | None = None,
    sh_degree: int | None = None, backend: Backend = "auto",
) -> RenderOutput:
    """Render 3D Gaussians into ``C`` cameras with gsplat's conventions.

    Args:
        means: ``(N, 3)`` world positions (metres).
        quats: ``(N, 4)`` wxyz rotations, need not be normalised.
        scales: ``(N, 3)`` activated scales (standard deviations, metres).
        opacities: ``(N,)`` activated opacities in [0, 1].
        colors: ``(N, D)`` colours, or ``(N, K, 3)`` SH coefficients when ``sh_degree`` is set
            (``K >= (sh_degree + 1) ** 2``, gsplat >= 1.0 layout).
        viewmats: ``(C, 4, 4)`` OpenCV world-to-camera (x right, y down, z forward).
        Ks: ``(C, 3, 3)`` intrinsics in pixels; pixel centres at integer + 0.5.
        width, height: image size in pixels.
        backgrounds: ``(C, D)`` colours composited behind, or ``None`` (black).
        sh_degree: SH degree 0..3, or ``None`` for plain colours.
        backend: ``"torch"`` (any device), ``"gsplat"`` (CUDA) or ``"auto"`` (gsplat for CUDA
            tensors when it imports, else torch).

    Returns:
        :class:`RenderOutput` with ``rgb (C, H, W, D)``, ``alpha (C, H, W, 1)``,
        ``depth (C, H, W, 1)`` (alpha-weighted camera depth, gsplat's "D") and ``meta``
        (``means2d (C, N, 2)``, ``radii (C, N, 2)`` int32 as gsplat 1.5.3 returns them - per
        axis, 0 for a Gaussian that is culled or entirely off the image, so a Gaussian is
        visible in camera ``c`` when ``(radii[c] > 0).all(-1)`` - and ``depths (C, N)``;
        torch backend also ``num_fragments``). Both backends render the same image up to
        float round-off. Gradients reach means, quats, scales, opacities and colors.

    Raises:
        ValueError: a shape mismatch (the argument is named) or an unknown backend.
        RuntimeError: ``backend="gsplat"`` without CUDA or gsplat.
    """
    N = means.shape[0]
    _check("means", means, (N, 3))
    _check("quats", quats, (N, 4))
    _check("scales", scales, (N, 3))
    _check("opacities", opacities, (N,))
    _check("colors", colors, (N, None, 3) if sh_degree is not None else (N, None))
    C = viewmats.shape[0]
    _check("viewmats", viewmats, (C, 4, 4))
    _check("Ks", Ks, (C, 3, 3))
    if backend == "auto":
        backend = "gsplat" if means.is_cuda and gsplat_available() else "torch"
    if backend == "gsplat":
        return _render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, sh_degree)
    if backend != "torch":
        raise ValueError(f"render_gaussians: unknown backend '{backend}'")
    cov3d = covariance_3d(quats, scales)  # camera-independent: once for all C cameras
    projs = [project_gaussians(means, quats, scales, viewmats[c], Ks[c], width, height, cov3d=cov3d) for c in range(C)]
    # one (C, N, 2) tensor that the rasteriser reads from, so that retain_grad() on
    # meta["means2d"] collects view-space gradients (densification), as with gsplat
    means2d = torch.stack([p.means2d for p in projs])
    rgbs, alphas, depths, metas = [], [], [], []
    for c in range(C):
        if sh_degree is not None:
            campos = -viewmats[c, :3, :3].T @ viewmats[c, :3, 3]
            col = eval_sh(sh_degree, colors, means - campos)
        else:
            col = colors
        bg = None if backgrounds is None else backgrounds[c]
        proj = projs[c]._replace(means2d=means2d[c])
        rgb, a, d, m = rasterize_camera(means, quats, scales, opacities, col, viewmats[c], Ks[c], width, height, bg, proj)
        rgbs.append(rgb)
        alphas.append(a)
        depths.append(d)
        metas.append(m)
    meta = {k: torch.stack([m[k] for m in metas]) for k in ("radii", "depths")}
    meta["means2d"] = means2d
    meta["num_fragments"] = sum(m["num_fragments"] for m in metas)
    meta["backend"] = "torch"
    return RenderOutput(rgb=torch.stack(rgbs), alpha=torch.stack(alphas), depth=torch.stack(depths), meta=meta)


def _render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, sh_degree,
                   rasterization=None):
    """gsplat's ``rasterization`` (``rasterization`` may stand in for it: same signature)."""
    if rasterization is None:
        if not (means.is_cuda and gsplat_available()):
            raise RuntimeError("backend='gsplat' needs CUDA tensors and the gsplat package (pip install '.[cuda]')")
        from gsplat import rasterization

    out, alpha, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        sh_degree=sh_degree, backgrounds=backgrounds, render_mode="RGB+D", packed=False,
    )
    meta = dict(meta)
    meta["backend"] = "gsplat"
    return RenderOutput(rgb=out[..., :-1], alpha=alpha, depth=out[..., -1:], meta=meta)
