"""``pointillist flame preview``: the mesh neutral and in a few expressions and poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..viz import contact_sheet, default_K, draw_mesh, look_at_viewmat, save_png
from .asset import FlameAsset
from .model import FlameModel

__all__ = ["preview_poses", "render_preview"]


def preview_poses(asset: FlameAsset) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Named parameter sets shown by the preview (neutral, jaw, expressions, head poses)."""
    E = asset.n_expr

    def expr(k: int, v: float = 2.0) -> torch.Tensor:
        e = torch.zeros(1, E)
        if k < E:
            e[0, k] = v
        return e

    return [
        ("neutral", {}),
        ("jaw open", {"jaw_pose": torch.tensor([[0.35, 0.0, 0.0]])}),
        ("expr 0 (+2)", {"expr": expr(0)}),
        ("expr 5 (+2)", {"expr": expr(5)}),
        ("expr 7 (+1)", {"expr": expr(7, 1.0)}),
        ("shape 0 (+3)", {"shape": torch.eye(1, asset.n_shape) * 3}),
        ("turn left", {"rotation": torch.tensor([[0.0, 0.6, 0.0]])}),
        ("neck tilt", {"neck_pose": torch.tensor([[0.3, 0.0, 0.2]])}),
    ]


def render_preview(asset: FlameAsset, out: str | Path, size: int = 256) -> Path:
    """Render :func:`preview_poses` into one labelled contact-sheet PNG at ``out``."""
    model = FlameModel(asset, dtype=torch.float64)
    faces = asset.faces
    K = default_K(size, size, fov_deg=18.0)
    centre = asset.v_template.mean(0)
    view = look_at_viewmat(centre + np.array([0.15, 0.05, 0.75]), centre)
    imgs, labels = [], []
    with torch.no_grad():
        for name, p in preview_poses(asset):
            v = model(**{k: t.double() for k, t in p.items()})["vertices"][0].numpy()
            imgs.append(draw_mesh(v, faces, view, K, size, size))
            labels.append(name)
    return save_png(contact_sheet(imgs, cols=4, labels=labels), out)
