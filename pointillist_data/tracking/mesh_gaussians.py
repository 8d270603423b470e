"""Render a FLAME mesh through the Gaussian renderer: discs densely bound to its faces.

Tracking needs a differentiable mesh renderer for its silhouette and photometric terms;
VHAP uses nvdiffrast (CUDA only). Here every face carries 1 or 3 flat Gaussians (at the
centroid, or at the three sub-triangle centroids) whose in-plane size follows the face,
with a learnable per-face colour, so :func:`render_gaussians` renders the mesh on any
device and gradients reach the vertices.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..flame.frames import face_frames
from ..render import render_gaussians

__all__ = ["MeshGaussians"]


class MeshGaussians:
    """Gaussians bound to the faces of a mesh.

    Args:
        faces: ``(F, 3)`` int64.
        per_face: 1 or 3 Gaussians per face.
        device: torch device.
    """

    def __init__(self, faces: Tensor, per_face: int = 3, device: str | torch.device = "cpu") -> None:
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
        out = render_gaussians(means, quats, scales, opac, colors[self.binding], viewmats, Ks, width, height,
                               backgrounds=bg)
        return out.rgb, out.alpha
