"""Levenberg-Marquardt refinement of one frame's landmark fit, in float64.

The first frame's landmark fit (identity shape, expression, rotation, neck, jaw, translation)
is badly conditioned: a wrong identity shape compensated by a wrong head pose fits the
multi-view landmarks almost as well as the true pair, and Adam (float32, a few hundred
steps) stops in that valley. On the synthetic captures (ground-truth landmarks, 16 cameras)
the valley is an optimiser's, not the data's: the true shape and pose fit the landmarks to
1e-11 px^2 where Adam stops at 7e-3 px^2 with 2.9 mm vertex error, and a few Gauss-Newton
steps in float64 reach 0.3 mm (BENCHMARKS.md, "Tracking accuracy per synthetic identity").

This minimises the tracker's own first-frame objective (landmark term and priors,
:meth:`FlameTracker._fit_frame`) as a sum of squared residuals, with the Jacobian from forward
differences of one batched FLAME evaluation. Only for frames with landmarks in two or more
cameras: one camera cannot tell the head's size from its depth. Source: Levenberg 1944,
Marquardt 1963 (damping by the diagonal of J^T J).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..flame.model import FlameModel

__all__ = ["refine_frame_lm"]

_STEP = 1e-6  # forward-difference step (float64: about 1e-6 relative error of the Jacobian)


def refine_frame_lm(tracker: Any, p: dict[str, torch.Tensor], t: int, names: list[str], with_shape: bool,
                    iters: int) -> float | None:
    """Refine frame ``t``'s ``names`` (and the shared ``shape`` when ``with_shape``) in place.

    Args:
        tracker: a :class:`~pointillist_data.tracking.tracker.FlameTracker` after ``_setup``
            (its ``project``, ``target (T, C, L, 2)`` px, ``weight (T, C, L)``, ``cfg``,
            ``asset``, ``lmk_name`` and ``dev`` are used).
        p: the tracker's parameters: per-frame ``(T, k)`` float32 tensors (``expr``,
            ``rotation``, ``neck_pose``, ``jaw_pose``, ``eyes_pose``, ``translation``) and
            ``shape (1, S)``.
        iters: Levenberg-Marquardt iterations (each one batched FLAME evaluation of
            ``n + 1`` parameter vectors, ``n`` the number of refined coefficients).

    Returns:
        The landmark term after refinement (mean squared pixel error, as the tracker's),
        or ``None`` when nothing was done (``iters`` 0, or landmarks in fewer than two
        cameras). Parameters are only replaced by a state of lower objective.
    """
    w = tracker.weight[t : t + 1].double()
    if iters <= 0 or int((w.sum(-1) > 0).sum()) < 2:
        return None
    cfg, dev = tracker.cfg, tracker.dev
    if getattr(tracker, "_model64", None) is None:
        tracker._model64 = FlameModel(tracker.asset, dtype=torch.float64).to(dev)
    model = tracker._model64
    keys = list(names) + (["shape"] if with_shape else [])
    sizes = [p[k].shape[1] for k in keys]
    x = torch.cat([p["shape"] if k == "shape" else p[k][t : t + 1] for k in keys], 1).detach().double()
    fixed = {k: (v if k == "shape" else v[t : t + 1]).detach().double() for k, v in p.items() if k != "static_offset"}
    sw = (w / w.sum().clamp_min(1.0)).sqrt()[..., None] * math.sqrt(cfg.w_landmark)
    target = tracker.target[t : t + 1].double()
    n_lmk = target[0].numel()

    def residuals(X: torch.Tensor) -> torch.Tensor:
        B = X.shape[0]
        q = {k: fixed[k].expand(B, -1) for k in fixed}
        q.update(zip(keys, torch.split(X, sizes, 1), strict=True))
        out = model(**q)
        uv = tracker.project(out[f"landmarks_{tracker.lmk_name}"])  # (B, C, L, 2)
        prior = [q["shape"] * math.sqrt(cfg.w_shape), q["expr"] * math.sqrt(cfg.w_expr)]
        prior += [q[k] * math.sqrt(cfg.w_pose) for k in ("neck_pose", "jaw_pose", "eyes_pose")]
        return torch.cat([((uv - target) * sw).reshape(B, -1), *prior], 1)

    n = x.shape[1]
    eye = torch.eye(n, dtype=torch.float64, device=dev) * _STEP

    def linearise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        R = residuals(torch.cat([x, x + eye], 0))
        return R[0], ((R[1:] - R[0]) / _STEP).T  # (m,), (m, n)

    lam = 1e-3
    with torch.no_grad():
        r, J = linearise(x)
        f = float((r**2).sum())
        for _ in range(iters):
            A, g = J.T @ J, J.T @ r
            try:
                step = torch.linalg.solve(A + lam * torch.diag(torch.diagonal(A).clamp_min(1e-12)), -g)
            except RuntimeError:  # singular even with damping: give up, keep the best state
                break
            xn = x + step[None]
            rn = residuals(xn)[0]
            fn = float((rn**2).sum())
            if math.isfinite(fn) and fn < f:
                x, f, lam = xn, fn, max(lam / 3, 1e-9)
                r, J = linearise(x)
            else:
                lam *= 4
        for k, v in zip(keys, torch.split(x, sizes, 1), strict=True):
            if k == "shape":
                p["shape"].copy_(v.to(p["shape"].dtype))
            else:
                p[k][t] = v[0].to(p[k].dtype)
    return float((r[:n_lmk] ** 2).sum())
