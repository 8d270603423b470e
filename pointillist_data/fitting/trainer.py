"""The fitting loop: GaussianAvatars-style optimisation with per-face density bounds.

Loss ``0.8 L1 + 0.2 (1 - SSIM)`` (pytorch-msssim) plus the local position and scale
regularisers of GaussianAvatars; Adam with an exponentially decayed position learning rate;
adaptive density control (:mod:`.density`) from view-space gradients; optional opacity
reset and FLAME fine-tuning. Source: GaussianAvatars (Qian et al., CVPR 2024) and
AvatarPointillist supplementary D (4..15 Gaussians per face).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ssim

from .. import checkpoint as ckpt
from ..capture.camera import stack_cameras
from ..errors import PointillistError
from ..flame.asset import FlameAsset
from ..flame.frames import face_frames
from ..gaussians import BoundGaussians
from ..progress import NULL_PROGRESS, Progress, track
from ..render import render_gaussians
from ..render.sh import eval_sh
from .config import FittingConfig
from .data import FittingData
from .density import accumulate_view_gradients, check_bounds, select_densify, select_prune
from .gaussian_model import GaussianModel

__all__ = ["initial_gaussians", "GaussianFitter", "psnr", "FittingDivergedError"]


class FittingDivergedError(PointillistError, RuntimeError):
    """A loss or parameter became NaN / inf (the message names the step and tensor)."""


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def initial_gaussians(asset: FlameAsset, data: FittingData, per_face: int, device: str = "cpu",
                      seed: int = 0) -> BoundGaussians:
    """``per_face`` Gaussians on every face (sub-triangle centroids, then random points),
    thin discs sized to the face, 0.7 opacity, colours sampled from the training image that
    sees each face most frontally."""
    rng = np.random.default_rng(seed)
    F_ = asset.num_faces
    fixed = np.array([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])
    bary = [fixed[: min(per_face, 4)]] + ([rng.dirichlet(np.ones(3), size=per_face - 4)] if per_face > 4 else [])
    bary = np.concatenate(bary)
    verts = data.posed_vertices(asset, device)[0]
    frames = face_frames(verts, torch.as_tensor(asset.faces, device=device))
    tri = verts[torch.as_tensor(asset.faces, device=device)]  # (F, 3, 3)
    pos = torch.einsum("pk,fkd->fpd", torch.as_tensor(bary, dtype=verts.dtype, device=device), tri).reshape(-1, 3)
    binding = torch.arange(F_, device=device).repeat_interleave(len(bary))
    R, k, T = frames.R[binding], frames.k[binding], frames.T[binding]
    local = (R.transpose(-1, -2) @ (pos - T)[..., None]).squeeze(-1) / k[:, None]
    spread = math.sqrt(0.5 / per_face)
    log_scale = torch.log(torch.tensor([spread, 0.15 * spread, spread])).expand(len(binding), 3).clone()
    rgb = _sample_colours(data, frames, binding, pos)
    return BoundGaussians(local.cpu().numpy().astype(np.float32), log_scale.numpy().astype(np.float32),
                          np.tile(np.array([1.0, 0, 0, 0], np.float32), (len(binding), 1)),
                          np.full(len(binding), math.log(0.7 / 0.3), np.float32), GaussianModel.rgb_init(rgb),
                          binding.cpu().numpy())


def _sample_colours(data: FittingData, frames, binding: torch.Tensor, pos: torch.Tensor) -> np.ndarray:
    train = [i for i in data.indices("train") if data.timestep[i] == 0] or list(data.indices("train"))
    normals = frames.R[binding][..., :, 1]  # a1: the face normal
    best = torch.full((len(pos),), -2.0)
    rgb = torch.full((len(pos), 3), 0.5)
    for i in train:
        cam = data.cameras[i]
        c = torch.as_tensor(cam.center, dtype=pos.dtype)
        d = c - pos.cpu()
        facing = (normals.cpu() * d).sum(-1) / d.norm(dim=-1)
        uv, _ = cam.project(pos.cpu().double().numpy())
        x = torch.as_tensor(uv[:, 0]).long().clamp(0, cam.width - 1)
        y = torch.as_tensor(uv[:, 1]).long().clamp(0, cam.height - 1)
        upd = facing > best
        rgb[upd] = data.images[i][y[upd], x[upd]]
        best = torch.maximum(best, facing)
    return rgb.clamp(0.02, 0.98).numpy()


class GaussianFitter:
    """Fit bound Gaussians to one identity's tracking export.

    Args:
        asset: the head model; data: :class:`FittingData`; config: :class:`FittingConfig`.
        init: initial Gaussians (default: :func:`initial_gaussians`).
    """

    def __init__(self, asset: FlameAsset, data: FittingData, config: FittingConfig,
                 init: BoundGaussians | None = None) -> None:
        self.asset, self.data, self.cfg = asset, data, config
        self.dev = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        init = init or initial_gaussians(asset, data, config.min_per_face, config.device, config.seed)
        lrs = {"xyz": config.lr_position_init, "log_scale": config.lr_scaling, "rotation": config.lr_rotation,
               "opacity_logit": config.lr_opacity, "sh": config.lr_feature}
        self.model = GaussianModel(init, config.sh_degree, lrs, config.device)
        self.frames = data.posed_frames(asset, self.dev)
        self.flame_opt = None
        if config.finetune_flame:
            from ..flame.model import FlameModel

            self.flame = FlameModel(asset).to(self.dev)
            tp = data.params.to_torch(self.dev)
            self.flame_fixed = {k: tp[k] for k in ("shape", "static_offset") if k in tp}
            self.flame_params = {k: torch.nn.Parameter(tp[k].clone()) for k in
                                 ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")}
            self.flame_opt = torch.optim.Adam(list(self.flame_params.values()), lr=config.lr_flame)
        self.viewmats, self.Ks = stack_cameras(data.cameras, self.dev)
        self.W, self.H = data.cameras[0].width, data.cameras[0].height
        self.bg = torch.full((1, 3), data.background, device=self.dev)
        verts = self.frames[0].T
        self.extent = float((verts.max(0).values - verts.min(0).values).norm())
        self.history: list[dict] = []

    def _colors(self, g: dict, cam: int) -> torch.Tensor:
        if self.cfg.sh_degree == 0:
            return (g["sh"][:, 0] * 0.28209479177387814 + 0.5).clamp_min(0)
        campos = -self.viewmats[cam, :3, :3].T @ self.viewmats[cam, :3, 3]
        return eval_sh(self.cfg.sh_degree, g["sh"], g["means"] - campos)

    def _frames(self, t: int):
        if self.flame_opt is None:
            return self.frames[t]
        kw = {k: v[t : t + 1] for k, v in self.flame_params.items()}
        kw["shape"] = self.flame_fixed["shape"][t : t + 1]
        if "static_offset" in self.flame_fixed:
            so = self.flame_fixed["static_offset"]  # (T, V, 3) when dynamic offsets are folded in
            kw["static_offset"] = so[t : t + 1] if so.shape[0] > 1 else so
        verts = self.flame(**kw)["vertices"][0]
        return face_frames(verts, self.flame.faces)

    def flame_result(self):
        """The (possibly fine-tuned) FLAME parameters of the sequence."""
        if self.flame_opt is None:
            return self.data.params
        from ..flame.params import FlameParams

        d = {k: v.detach() for k, v in self.flame_params.items()}
        d["shape"] = self.flame_fixed["shape"]
        p = self.data.params
        return FlameParams.from_torch(d, static_offset=p.static_offset, dynamic_offset=p.dynamic_offset,
                                      timestep_id=p.timestep_id)

    def render(self, i: int) -> dict:
        """Render image ``i`` of the data with the current Gaussians."""
        t = int(self.data.timestep[i])
        g = self.model.to_global(self._frames(t))
        out = render_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], self._colors(g, i),
                               self.viewmats[i : i + 1], self.Ks[i : i + 1], self.W, self.H, backgrounds=self.bg)
        out["global"] = g
        return out

    def _loss(self, out: dict, i: int, it: int) -> torch.Tensor:
        c = self.cfg
        pred = out.rgb[0]
        gt = self.data.images[i].to(self.dev)
        l1 = (pred - gt).abs().mean()
        s = ssim(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], data_range=1.0, size_average=True,
                 win_size=min(11, (min(self.W, self.H) // 2) * 2 - 1))
        p = self.model.params
        reg = c.lambda_xyz * torch.relu(p["xyz"].norm(dim=-1) - c.threshold_xyz).mean()
        reg = reg + c.lambda_scale * torch.relu(torch.exp(p["log_scale"]) - c.threshold_scale).mean()
        loss = c.lambda_l1 * l1 + c.lambda_ssim * (1 - s) + reg
        if not torch.isfinite(loss):
            raise FittingDivergedError(f"loss became {float(loss)} at step {it} (L1 {float(l1)}, SSIM {float(s)})")
        return loss

    def _densify(self, global_scales: torch.Tensor, prune: bool = True) -> dict:
        c, m = self.cfg, self.model
        F_ = self.asset.num_faces
        avg = m.grad_accum / m.grad_count.clamp_min(1)
        cand = avg >= c.grad_threshold
        allowed = select_densify(m.binding, cand, avg, F_, c.max_per_face)
        big = global_scales.detach().max(-1).values > c.percent_dense * self.extent
        n_clone, n_split = int((allowed & ~big).sum()), int((allowed & big).sum())
        split_mask = allowed & big
        m.clone(allowed & ~big)
        m.split(torch.cat([split_mask, torch.zeros(len(m) - len(split_mask), dtype=torch.bool, device=self.dev)]))
        n_prune = 0
        if prune:
            mask = select_prune(m.binding, torch.sigmoid(m.params["opacity_logit"].detach()), c.prune_opacity, F_,
                                c.min_per_face, c.allow_empty_faces)
            n_prune = int(mask.sum())
            m.prune(mask)
        m.reset_stats()
        if len(m) == 0:
            raise FittingDivergedError("every Gaussian was pruned (opacity threshold too high?)")
        return {"clone": n_clone, "split": n_split, "prune": n_prune, "total": len(m)}

    def fit(self, progress: Progress | None = None, checkpoint: str | Path | None = None) -> dict:
        """Run ``config.iterations`` steps; returns the log of densification events.

        Args:
            progress: reporter; one task advanced per iteration (loss, PSNR and Gaussian count
                from the first step, refreshed every ``config.log_every`` iterations).
            checkpoint: folder of the fit's checkpoint (``fit.pt``, every
                ``config.checkpoint_every`` steps and on Ctrl-C; see
                :mod:`pointillist_data.checkpoint`); the fit resumes from a checkpoint of the
                same data and configuration found there and removes it when done. ``None``:
                no checkpoints.

        Raises:
            FittingDivergedError: a non-finite loss or gradient.
            KeyboardInterrupt: Ctrl-C (after writing a checkpoint when one is configured).

        Returns:
            ``{"events": [...], "resumed_from": step of the checkpoint resumed from, or None}``.
        """
        ck = None
        if checkpoint is not None and self.cfg.checkpoint_every > 0:
            ck = ckpt.StageCheckpoint(checkpoint, "fit", self._fingerprint(), self.cfg.checkpoint_every)
        with (progress or NULL_PROGRESS).task("fitting", total=self.cfg.iterations) as task:
            log = self._fit(task, ck)
        if ck is not None:
            ck.remove()
        return {**log, "resumed_from": self.resumed_from}

    def _fingerprint(self) -> dict:
        d = self.data
        return {"stage": "fit", "config": ckpt.result_config(self.cfg), "images": len(d.images),
                "timesteps": [int(t) for t in d.timestep], "faces": self.asset.num_faces,
                "params": ckpt.digest_arrays(*d.params.to_torch("cpu").values()),
                "init": ckpt.digest_arrays(*self.model.params.values(), self.model.binding)}

    def _state(self, it: int, events: list) -> dict:
        """Everything the rest of the fit depends on, after step ``it``."""
        m = self.model
        st = {"it": it, "events": events, "last_reset": self._reset_at, "params": {n: p.detach() for n, p in m.params.items()},
              "binding": m.binding, "optimizer": m.optimizer.state_dict(), "grad_accum": m.grad_accum,
              "grad_count": m.grad_count, "rng": ckpt.rng_state(self.rng, self.dev)}
        if self.flame_opt is not None:
            st["flame"] = {k: v.detach() for k, v in self.flame_params.items()}
            st["flame_optimizer"] = self.flame_opt.state_dict()
        return st

    def _restore(self, st: dict) -> None:
        m = self.model
        for g in m.optimizer.param_groups:  # the saved tensors become the optimised parameters
            p = torch.nn.Parameter(st["params"][g["name"]].to(self.dev))
            g["params"][0] = m.params[g["name"]] = p
        m.optimizer.state.clear()
        m.optimizer.load_state_dict(st["optimizer"])
        m.binding, m.grad_accum, m.grad_count = st["binding"], st["grad_accum"], st["grad_count"]
        if self.flame_opt is not None and "flame" in st:
            with torch.no_grad():
                for k, v in self.flame_params.items():
                    v.copy_(st["flame"][k])
            self.flame_opt.load_state_dict(st["flame_optimizer"])
        ckpt.set_rng_state(self.rng, st["rng"], self.dev)

    def _fit(self, task, ck: ckpt.StageCheckpoint | None = None) -> dict:
        c = self.cfg
        train = self.data.indices("train")
        if len(train) == 0:
            raise FittingDivergedError("no training images in the export")
        d_from, d_until, d_every = c.steps(c.densify_from), c.steps(c.densify_until), max(1, c.steps(c.densify_every))
        reset_every = c.steps(c.opacity_reset_every)
        events = []
        self._reset_at = -(10**9)  # step of the last opacity reset
        start = 1
        st = ck.load(self.dev) if ck is not None else None
        self.resumed_from = None if st is None else int(st["it"])
        if st is not None:
            self._restore(st)
            events, self._reset_at, start = list(st["events"]), int(st["last_reset"]), int(st["it"]) + 1
            task.update(completed=start - 1, info=f"resumed from the checkpoint of step {start - 1}")
        with ckpt.deferred_interrupt() as interrupt:
            for it in range(start, c.iterations + 1):
                self._step(it, train, (d_from, d_until, d_every, reset_every), events, task)
                if ck is not None and (ck.due(it) or interrupt.requested) and it < c.iterations:
                    ck.save(self._state(it, events))
                if interrupt.requested:
                    raise KeyboardInterrupt
        return {"events": events}

    def _step(self, it: int, train, sched: tuple, events: list, task) -> None:
        """One optimisation step (and densification / opacity reset when due)."""
        c, m = self.cfg, self.model
        d_from, d_until, d_every, reset_every = sched
        frac = (it - 1) / max(1, c.iterations - 1)
        m.set_lr("xyz", c.lr_position_init * (c.lr_position_final / c.lr_position_init) ** frac)
        i = int(self.rng.choice(train))
        out = self.render(i)
        means2d = out.meta["means2d"]
        means2d.retain_grad()
        loss = self._loss(out, i, it)
        m.optimizer.zero_grad(set_to_none=True)
        if self.flame_opt is not None:
            self.flame_opt.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in m.params.items():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise FittingDivergedError(f"gradient of '{n}' became non-finite at step {it}")
        m.optimizer.step()
        if self.flame_opt is not None:
            self.flame_opt.step()
        with torch.no_grad():
            if it < d_until and means2d.grad is not None:
                accumulate_view_gradients(m.grad_accum, m.grad_count, means2d.grad, out.meta["radii"], self.W, self.H)
            if d_from <= it < d_until and it % d_every == 0:
                # right after an opacity reset every opacity is low: prune again only once
                # the Gaussians had a full densification interval to recover
                ev = self._densify(out["global"]["scales"], prune=it - self._reset_at >= d_every)
                ev["step"] = it
                events.append(ev)
            if reset_every and it % reset_every == 0 and it < d_until:
                m.reset_opacity()
                self._reset_at = it
        info = None
        # the first step reports too: a log line before step ``log_every`` still shows a loss
        if it % c.log_every == 0 or it == c.iterations or not task.info:
            info = (f"loss {float(loss.detach()):.4f}  PSNR {psnr(out.rgb[0].detach(), self.data.images[i].to(self.dev)):.2f} dB"
                    f"  {len(m)} Gaussians")
        task.update(completed=it, info=info)

    @torch.no_grad()
    def evaluate(self, split: str = "val", progress: Progress | None = None) -> dict:
        """Mean PSNR (dB) and SSIM over the images of ``split`` (``progress``: one task,
        advanced per image: thousands of test images take minutes)."""
        idx = self.data.indices(split)
        ps, ss = [], []
        for i in track(idx, f"fitting: evaluating {len(idx)} {split} image(s)", progress):
            pred = self.render(int(i)).rgb[0]
            gt = self.data.images[int(i)].to(pred.device)
            ps.append(psnr(pred, gt))
            ss.append(float(ssim(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], data_range=1.0,
                                 win_size=min(11, (min(self.W, self.H) // 2) * 2 - 1))))
        return {"psnr": float(np.mean(ps)) if ps else float("nan"), "ssim": float(np.mean(ss)) if ss else float("nan"),
                "images": len(idx)}

    def bounds(self) -> tuple[bool, dict]:
        return check_bounds(self.model.binding, self.asset.num_faces, self.cfg.min_per_face, self.cfg.max_per_face)
