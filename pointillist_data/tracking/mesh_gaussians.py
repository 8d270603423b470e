"""Render a FLAME mesh through the Gaussian renderer: discs densely bound to its faces.

Tracking needs a differentiable mesh renderer for its silhouette and photometric terms;
VHAP uses nvdiffrast (CUDA only). Here every face carries 1 or 3 flat Gaussians (at the
centroid, or at the three sub-triangle centroids) whose in-plane size follows the face,
with a learnable per-face colour, so :func:`render_gaussians` renders the mesh on any
device and gradients reach the vertices.

The CPU renderer's memory grows with its fragments (covered pixels x Gaussians): a 512 x 512
face crop held 1.5 GB in one differentiable render. With gradients on, an image larger than
``band_pixels`` is rendered in horizontal bands (a band is the image's crop: ``cy`` shifted
by its first row), each under activation checkpointing, so only one band's fragments are
alive at a time (measured on a 512 x 512 head: 1.56 GB above the process whole, 0.51 GB in
bands of 32 rows); the pixels are those of the whole render up to float rounding (a pixel
depends only on its own fragments), the backward recomputes each band once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..flame.frames import face_frames
from ..render import render_gaussians

__all__ = ["MeshGaussians"]


class MeshGaussians:
    """Gaussians bound to the faces of a mesh.

    Args:
        faces: ``(F, 3)`` int64.
        per_face: 1 or 3 Gaussians per face.
        device: torch device.
        band_pixels: with gradients on, render images of more pixels than this in
            checkpointed horizontal bands of about this many pixels (0 = never).
    """

    def __init__(self, faces: Tensor, per_face: int = 3, device: str | torch.device = "cpu",
                 band_pixels: int = 16384) -> None:
        self.band_pixels = band_pixels
        self.faces = faces.to(device)
        F = faces.shape[0]
        self.binding = torch.arange(F, device=device).repeat_interleave(per_face)
        if per_face == 1:
            bary = torch.tensor([[1 / 3, 1 / 3, 1 / 3]])
            sigma = 0.45
        else:
            bary = torch.tensor([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])
            sigma = 0.28
        self.bary = bary.to(device).repeat(F, 1)  # (F * per_face, 3)
        n = self.binding.shape[0]
        # local frame: x along the first edge, y the normal, z in-plane; thin along the normal
        self.log_scale = torch.log(torch.tensor([sigma, 0.02, sigma], device=device)).expand(n, 3)

    def render(self, verts: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
               background: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Render ``verts (V, 3)`` with per-face ``colors (F, 3)``; returns ``rgb (C, H, W, 3)``
        and ``alpha (C, H, W, 1)``."""
        fr = face_frames(verts, self.faces)
        means = (self.bary[:, :, None] * verts[self.faces[self.binding]]).sum(1)
        scales = fr.k[self.binding, None] * torch.exp(self.log_scale)
        quats = fr.q[self.binding]
        opac = torch.full((means.shape[0],), 0.97, device=verts.device, dtype=verts.dtype)
        C = viewmats.shape[0]
        bg = None if background is None else background.expand(C, 3)
        col = colors[self.binding]

        def band(y0: int, h: int, *g: Tensor) -> tuple[Tensor, Tensor]:
            K = Ks.clone()
            K[:, 1, 2] -= y0  # the band is the image's crop from row y0 (pixel centres at +0.5)
            out = render_gaussians(*g, viewmats, K, width, h, backgrounds=bg)
            return out.rgb, out.alpha

        args = (means, quats, scales, opac, col)
        rows = max(1, self.band_pixels // max(1, width))
        if not (torch.is_grad_enabled() and self.band_pixels and height > rows and height * width > self.band_pixels):
            return band(0, height, *args)
        parts = [checkpoint(band, y0, min(rows, height - y0), *args, use_reentrant=False)
                 for y0 in range(0, height, rows)]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
