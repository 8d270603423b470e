"""Trainable Gaussians bound to FLAME faces, with Adam-state-preserving clone / split / prune.

Parameters live in the local frames of their faces (GaussianAvatars): ``xyz`` (local mean),
``log_scale``, ``rotation`` (wxyz), ``opacity_logit``, ``sh`` ``(N, K, 3)``; ``binding`` is a
buffer. Structural edits keep each surviving Gaussian's Adam moments (as 3DGS does).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..flame.frames import FaceFrames, local_to_global
from ..gaussians import BoundGaussians
from ..quaternion import quat_to_matrix
from ..render.sh import rgb_to_sh

__all__ = ["GaussianModel"]

PARAMS = ("xyz", "log_scale", "rotation", "opacity_logit", "sh")


class GaussianModel:
    """Bound Gaussians and their Adam optimiser.

    Args:
        gaussians: initial :class:`BoundGaussians` (any SH degree up to ``sh_degree``).
        sh_degree: SH degree to train.
        lrs: learning rate per parameter name.
        device: torch device.
    """

    def __init__(self, gaussians: BoundGaussians, sh_degree: int, lrs: dict[str, float], device: str = "cpu") -> None:
        self.device = torch.device(device)
        K = (sh_degree + 1) ** 2
        sh = np.zeros((len(gaussians), K, 3), np.float32)
        k = min(K, gaussians.sh.shape[1])
        sh[:, :k] = gaussians.sh[:, :k]
        init = {"xyz": gaussians.xyz, "log_scale": gaussians.log_scale, "rotation": gaussians.rotation,
                "opacity_logit": gaussians.opacity_logit, "sh": sh}
        self.params = {n: torch.nn.Parameter(torch.as_tensor(np.asarray(v), dtype=torch.float32, device=self.device))
                       for n, v in init.items()}
        self.binding = torch.as_tensor(gaussians.binding, dtype=torch.long, device=self.device)
        self.optimizer = torch.optim.Adam([{"params": [self.params[n]], "lr": lrs[n], "name": n} for n in PARAMS],
                                          eps=1e-15)
        self.reset_stats()

    def __len__(self) -> int:
        return int(self.binding.shape[0])

    def reset_stats(self) -> None:
        self.grad_accum = torch.zeros(len(self), device=self.device)
        self.grad_count = torch.zeros(len(self), device=self.device)

    def set_lr(self, name: str, lr: float) -> None:
        for g in self.optimizer.param_groups:
            if g["name"] == name:
                g["lr"] = lr

    def to_global(self, frames: FaceFrames) -> dict[str, Tensor]:
        """Global means, activated scales, quaternions and opacities under ``frames``."""
        p = self.params
        mu, sc, q = local_to_global(frames, self.binding, p["xyz"], p["log_scale"], p["rotation"])
        return {"means": mu, "scales": sc, "quats": q, "opacities": torch.sigmoid(p["opacity_logit"]), "sh": p["sh"]}

    def export(self) -> BoundGaussians:
        d = {n: v for n, v in self.params.items()}
        d["binding"] = self.binding
        return BoundGaussians.from_torch(d)

    # ------------------------------------------------------------------ structure
    def _replace(self, new: dict[str, Tensor], keep: Tensor, extra_from: Tensor) -> None:
        """Keep rows ``keep`` (bool) and append ``new`` rows; Adam moments of kept rows survive,
        appended rows start from zero moments."""
        for g in self.optimizer.param_groups:
            n = g["name"]
            old = g["params"][0]
            state = self.optimizer.state.pop(old, None)
            data = torch.cat([old.detach()[keep], new[n]])
            p = torch.nn.Parameter(data)
            g["params"][0] = p
            self.params[n] = p
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = torch.cat([state[key][keep], torch.zeros_like(new[n])])
                self.optimizer.state[p] = state
        self.binding = torch.cat([self.binding[keep], self.binding[extra_from]])
        self.grad_accum = torch.cat([self.grad_accum[keep], torch.zeros(len(extra_from), device=self.device)])
        self.grad_count = torch.cat([self.grad_count[keep], torch.zeros(len(extra_from), device=self.device)])

    def clone(self, mask: Tensor) -> None:
        """Duplicate the selected Gaussians (small ones: the copy follows the gradient)."""
        idx = torch.nonzero(mask).squeeze(1)
        new = {n: self.params[n].detach()[idx].clone() for n in PARAMS}
        self._replace(new, torch.ones(len(self), dtype=torch.bool, device=self.device), idx)

    def split(self, mask: Tensor, n_split: int = 2) -> None:
        """Replace each selected Gaussian by ``n_split`` samples of it, 1/1.6 the size."""
        idx = torch.nonzero(mask).squeeze(1)
        p = {n: self.params[n].detach()[idx] for n in PARAMS}
        std = torch.exp(p["log_scale"]).repeat(n_split, 1)
        R = quat_to_matrix(p["rotation"]).repeat(n_split, 1, 1)
        offs = (R @ (torch.randn_like(std) * std)[..., None]).squeeze(-1)
        new = {n: v.repeat(n_split, *([1] * (v.dim() - 1))) for n, v in p.items()}
        new["xyz"] = new["xyz"] + offs
        new["log_scale"] = new["log_scale"] - math.log(0.8 * n_split)
        self._replace(new, ~mask, idx.repeat(n_split))

    def prune(self, mask: Tensor) -> None:
        self._replace({n: self.params[n].detach()[:0] for n in PARAMS}, ~mask, torch.zeros(0, dtype=torch.long,
                                                                                         device=self.device))

    def reset_opacity(self, value: float = 0.01) -> None:
        """Clamp opacities to at most ``value`` and clear their Adam moments (3DGS's reset)."""
        p = self.params["opacity_logit"]
        with torch.no_grad():
            p.copy_(torch.minimum(p, torch.logit(torch.tensor(value, device=self.device))))
        st = self.optimizer.state.get(p)
        if st:
            st["exp_avg"].zero_()
            st["exp_avg_sq"].zero_()

    @staticmethod
    def rgb_init(rgb: np.ndarray) -> np.ndarray:
        """SH DC coefficients ``(N, 1, 3)`` for colours ``(N, 3)``."""
        return rgb_to_sh(torch.as_tensor(rgb, dtype=torch.float32)).numpy()[:, None, :]
