"""The toolkit's own differentiable Gaussian rasteriser: pure torch, any device.

gsplat has no CPU path, so this is the renderer of CI, contributors without a GPU and the
demo. It keeps gsplat 1.5.3's semantics (alpha ceiling 0.999, alpha floor 1/255,
transmittance cut-off 1e-4 exclusive, front-to-back order by camera depth, pixel centres at
+0.5, the extent and radii of :func:`.projection.screen_radii`) and costs time in proportion
to the number of *fragments*, not pixels x Gaussians:

1. each visible Gaussian (radii > 0) covers the pixels whose centres lie inside its extent
   box (``|dx| <= r_x``, ``|dy| <= r_y`` with gsplat's opacity-aware integer radii, which
   hold every pixel where its alpha can reach 1/255); one fragment per covered pixel;
2. fragments with ``sigma < 0`` or alpha below 1/255 are dropped (as gsplat's kernels do);
   the rest are sorted by (pixel, depth);
3. compositing is a segmented exclusive product of ``1 - alpha`` computed as a float64
   log-space cumulative sum, so ``T_i = exp(sum_{j<i} log(1 - alpha_j))`` within a pixel;
4. colours, alpha and depth are summed per pixel as differences of float64 prefix sums
   at the segment ends (deterministic, unlike a multi-threaded ``index_add``).

Autograd differentiates every step; no custom backward is needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .projection import ALPHA_MIN, Projected, project_gaussians, screen_radii

__all__ = ["rasterize_camera", "ALPHA_MAX", "ALPHA_MIN", "T_MIN"]

ALPHA_MAX = 0.999
T_MIN = 1e-4


def _fragments(means2d: Tensor, radii: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Integer fragment lists: Gaussian id, pixel x, pixel y (no gradients)."""
    with torch.no_grad():
        ex, ey = radii[:, 0].to(means2d.dtype), radii[:, 1].to(means2d.dtype)
        mx, my = means2d[:, 0].detach(), means2d[:, 1].detach()
        x0 = torch.ceil(mx - ex - 0.5).clamp(0, width).long()
        x1 = torch.floor(mx + ex - 0.5).clamp(-1, width - 1).long()
        y0 = torch.ceil(my - ey - 0.5).clamp(0, height).long()
        y1 = torch.floor(my + ey - 0.5).clamp(-1, height - 1).long()
        wx = (x1 - x0 + 1).clamp_min(0)
        wy = (y1 - y0 + 1).clamp_min(0)
        cnt = torch.where((radii > 0).all(-1), wx * wy, torch.zeros_like(wx))
        gid = torch.repeat_interleave(torch.arange(len(cnt), device=cnt.device), cnt)
        start = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(gid.numel(), device=cnt.device) - start[gid]
        wg = wx[gid]
        px = x0[gid] + local % wg.clamp_min(1)
        py = y0[gid] + torch.div(local, wg.clamp_min(1), rounding_mode="floor")
    return gid, px, py


class _SegmentSum(torch.autograd.Function):
    """Sums of consecutive row segments ``x (F, C)`` ending at rows ``seg_end (S,)``: ``(S, C)``.

    Forward: differences of a float64 prefix sum at the segment ends (deterministic, unlike a
    multi-threaded ``index_add``). Backward: each row receives its segment's gradient, a
    gather; autograd's own backward of ``cumsum`` would flip and re-sum the whole ``(F, C)``
    array, the renderer's most expensive step on the CPU.
    """

    @staticmethod
    def forward(ctx, x: Tensor, seg_end: Tensor) -> Tensor:
        tot = torch.cumsum(x, 0).index_select(0, seg_end)
        if ctx.needs_input_grad[0]:  # the segment of every row, for the backward gather
            seg_of = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            seg_of[seg_end[:-1] + 1] = 1
            ctx.save_for_backward(torch.cumsum(seg_of, 0))
        return torch.cat([tot[:1], tot[1:] - tot[:-1]])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (seg_of,) = ctx.saved_tensors
        return grad.index_select(0, seg_of), None


def rasterize_camera(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmat: Tensor, K: Tensor, width: int, height: int, background: Tensor | None = None,
    proj: Projected | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Render one camera.

    Args:
        means ``(N, 3)``, quats ``(N, 4)`` wxyz, scales ``(N, 3)`` activated, opacities ``(N,)``
        in [0, 1], colors ``(N, D)`` already view-evaluated (RGB or any D channels);
        viewmat ``(4, 4)`` OpenCV world-to-camera; K ``(3, 3)``; background ``(D,)`` or None;
        proj: this camera's projection when the caller computed it (so that its ``means2d``
        tensor, part of the graph, can collect view-space gradients).

    Returns:
        ``(image (H, W, D), alpha (H, W, 1), depth (H, W, 1), meta)`` where depth is the
        alpha-weighted sum of camera depths (gsplat's "D" mode) and ``meta`` holds
        ``means2d (N, 2)``, ``radii (N, 2)`` int32 (:func:`.projection.screen_radii`, 0 for
        culled Gaussians), ``depths (N,)``, ``num_fragments``.
    """
    if proj is None:
        proj = project_gaussians(means, quats, scales, viewmat, K, width, height)
    radii = screen_radii(proj, opacities, width, height)
    gid, px, py = _fragments(proj.means2d, radii, width, height)
    D = colors.shape[-1]
    dev, dt = means.device, means.dtype
    if gid.numel():
        dx = (px.to(dt) + 0.5) - proj.means2d[gid, 0]
        dy = (py.to(dt) + 0.5) - proj.means2d[gid, 1]
        con = proj.conics[gid]
        sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
        alpha = torch.clamp(opacities[gid] * torch.exp(-sigma), max=ALPHA_MAX)
        keep = ((sigma >= 0) & (alpha >= ALPHA_MIN)).detach()
        gid, px, py, alpha = gid[keep], px[keep], py[keep], alpha[keep]
    pix = py * width + px
    if gid.numel():
        with torch.no_grad():
            order_z = torch.argsort(proj.depths.detach(), stable=True)
            rank_of = torch.empty(len(order_z), dtype=torch.long, device=dev)
            rank_of[order_z] = torch.arange(len(order_z), device=dev)
            rank = rank_of[gid]
            order = torch.argsort(pix * len(order_z) + rank, stable=True)
            pix_s = pix[order]
            first = torch.ones_like(pix_s, dtype=torch.bool)
            first[1:] = pix_s[1:] != pix_s[:-1]
            seg_start = torch.cummax(torch.where(first, torch.arange(len(pix_s), device=dev), 0), 0).values
        gid_s, alpha_s = gid[order], alpha[order]
        log1m = torch.log1p(-alpha_s.double())
        excl = torch.cumsum(log1m, 0) - log1m  # exclusive prefix over all fragments
        log_T = excl - excl[seg_start]  # ... restarted at every pixel
        included = ((log_T + log1m) > math.log(T_MIN)).detach()
        w = alpha_s.double() * torch.exp(log_T) * included
        # Per-pixel sums as differences of prefix sums at segment ends: deterministic (a
        # multi-threaded index_add is not), and exact enough in float64.
        with torch.no_grad():
            last = torch.ones_like(first)
            last[:-1] = first[1:]
            seg_end = torch.nonzero(last).squeeze(1)
            seg_pix = pix_s[seg_end]

        per_fragment = torch.cat([w[:, None] * colors[gid_s].double(), w[:, None],
                                  (w * proj.depths[gid_s].double())[:, None]], 1)
        vals = _SegmentSum.apply(per_fragment, seg_end).to(dt)
        out = torch.zeros(height * width, D + 2, device=dev, dtype=dt).index_put((seg_pix,), vals)
        img, acc, dep = out[:, :D], out[:, D], out[:, D + 1]
    else:
        img = torch.zeros(height * width, D, device=dev, dtype=dt) + 0 * colors.sum()
        acc = torch.zeros(height * width, device=dev, dtype=dt)
        dep = torch.zeros(height * width, device=dev, dtype=dt)
    if background is not None:
        img = img + (1.0 - acc)[:, None] * background
    meta = {"means2d": proj.means2d, "radii": radii, "depths": proj.depths, "num_fragments": int(gid.numel())}
    return img.view(height, width, D), acc.view(height, width, 1), dep.view(height, width, 1), meta
