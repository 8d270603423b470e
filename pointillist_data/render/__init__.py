"""Differentiable Gaussian rendering: the toolkit's CPU path and gsplat on CUDA."""

from .api import RenderOutput, gsplat_available, render_gaussians
from .projection import project_gaussians
from .sh import eval_sh, rgb_to_sh, sh_to_rgb

__all__ = ["render_gaussians", "RenderOutput", "gsplat_available", "project_gaussians", "eval_sh", "rgb_to_sh",
           "sh_to_rgb"]
