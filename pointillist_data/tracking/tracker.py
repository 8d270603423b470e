"""FLAME tracking in VHAP's spirit, on any device.

1. **Rigid initialisation** from multi-view landmarks: triangulate (DLT), align the neutral
   head's landmarks by Umeyama, convert to FLAME's rotation about the root joint; with one
   camera, place the head on the landmark ray at the depth the eye distance implies.
2. **Sequential tracking**: the first frame optimises identity shape with expression, jaw,
   neck, eyes, rotation and translation (Adam, then a few Levenberg-Marquardt steps in
   float64 with two or more cameras, :mod:`.refine`); each later frame starts from its
   predecessor with the shape fixed (landmark term and priors).
3. **Global pass** over all frames with the shared shape and static offset: landmarks,
   silhouette and photometric terms (the mesh rendered as Gaussians bound to its faces,
   :class:`MeshGaussians`, on random camera / frame subsets), shape / expression / pose
   priors, Laplacian smoothness of the static offset and temporal smoothness.

Frames with too few landmark views, or whose loss turns NaN, are skipped and flagged with a
reason; the sequence fails with :class:`TrackingError` when fewer than ``min_frames`` remain.
Source: VHAP (Qian et al. 2024), re-implemented from its description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..capture.camera import Camera
from ..errors import PointillistError
from ..flame.asset import FlameAsset
from ..flame.model import FlameModel
from ..flame.params import N_EXPR, N_SHAPE, FlameParams
from ..progress import NULL_PROGRESS, Progress
from . import geometry
from .config import TrackingConfig
from .geometry import laplacian_matrix, look_at_rotation, rigid_to_flame, triangulate, umeyama
from .landmarks import landmark_set_of
from .mesh_gaussians import MeshGaussians
from .refine import refine_frame_lm
from .views import ViewCache

__all__ = ["TrackingData", "TrackingResult", "TrackingError", "FlameTracker", "laplacian_matrix"]

PER_FRAME = ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")


class TrackingError(PointillistError, RuntimeError):
    """The sequence cannot be tracked (too few usable frames); the message lists why."""


@dataclass
class TrackingData:
    """Inputs of one identity: one sequence, or several tracked as one timeline.

    Attributes:
        cameras: ``C`` cameras (OpenCV), one image size.
        landmarks: ``(T, C, L, 3)`` pixel x, y and confidence (0 = missing).
        images: ``(T, C, H, W, 3)`` uint8 - an ndarray or a lazy
            :class:`~pointillist_data.capture.frames.FrameArray` read one frame at a time -
            or ``None`` (no photometric term).
        masks: ``(T, C, H, W)`` uint8 alpha (0..255), bool, or float in [0, 1], likewise
            lazy or not, or ``None`` (no silhouette term).
        timestep_ids: ``T`` ids.
        sequence_ids: ``T`` sequence names (frames of one sequence are contiguous), or
            ``None`` for a single sequence; smoothness never links two sequences and each
            sequence's first frame gets its own rigid initialisation.
        cache: the frame cache the lazy arrays live in (closed by :meth:`close`).
    """

    cameras: list[Camera]
    landmarks: np.ndarray
    images: Any = None
    masks: Any = None
    timestep_ids: list[str] = field(default_factory=list)
    sequence_ids: list[str] | None = None
    cache: Any = None

    def close(self) -> None:
        """Remove the frame cache (the lazy images and masks are unusable afterwards)."""
        if self.cache is not None:
            self.cache.close()


@dataclass
class TrackingResult:
    """Tracked parameters of the kept frames, the flagged frames / cameras and metrics.

    Attributes:
        projected: ``(K, C, L, 2)`` float32 tracked landmarks projected into every camera
            (pixels) for the ``K`` kept frames, or ``None``.
        detected: ``(K, C, L, 3)`` float32 the detected landmarks they were fitted to
            (x, y, confidence; 0 = missing), or ``None``.
    """

    params: FlameParams
    kept: list[int]
    flagged: list[dict]
    metrics: dict
    cameras: list[Camera]
    projected: np.ndarray | None = None
    detected: np.ndarray | None = None


class FlameTracker:
    """Track FLAME parameters for one sequence (see the module docstring).

    Args:
        asset: the head model.
        config: :class:`TrackingConfig`.
    """

    def __init__(self, asset: FlameAsset, config: TrackingConfig) -> None:
        self.asset, self.cfg = asset, config
        self.dev = torch.device(config.device)
        self.model = FlameModel(asset).to(self.dev)
        self.S, self.E = asset.n_shape, asset.n_expr
        self.rng = np.random.default_rng(config.seed)

    # ------------------------------------------------------------------ helpers
    def _setup(self, data: TrackingData) -> None:
        T, C, L, _ = data.landmarks.shape
        name = self.cfg.landmark_set if self.cfg.landmark_set != "auto" else landmark_set_of(L)
        emb = self.asset.landmarks[name]
        cols = np.arange(L) if emb.indices is None or name == "ibug68" else emb.indices
        if cols.max() >= L:
            raise TrackingError(f"landmark files have {L} points; the {name} embedding needs index {cols.max()}")
        self.lmk_name = name
        lm = data.landmarks[:, :, cols]  # (T, C, L', 3)
        self.target = torch.as_tensor(lm[..., :2], dtype=torch.float32, device=self.dev)
        self.weight = torch.as_tensor(np.clip(lm[..., 2], 0, 1), dtype=torch.float32, device=self.dev)
        self.cams = data.cameras
        w2c = torch.as_tensor(np.stack([c.world_to_cam for c in data.cameras]), dtype=torch.float32, device=self.dev)
        self.R, self.t = w2c[:, :3, :3], w2c[:, :3, 3]
        self.K = torch.as_tensor(np.stack([c.K for c in data.cameras]), dtype=torch.float32, device=self.dev)
        self.focal_scale = torch.ones(1, device=self.dev, requires_grad=self.cfg.optimize_focal)

    def _Ks(self) -> torch.Tensor:
        """Intrinsics with fx, fy scaled by the (optionally learned) focal scale."""
        one = torch.ones(1, device=self.dev)
        diag = torch.cat([self.focal_scale, self.focal_scale, one])
        M = torch.ones(3, 3, device=self.dev) - torch.eye(3, device=self.dev) + torch.diag(diag)
        return self.K * M

    def project(self, pts: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, 3)`` world points -> ``(B, C, L, 2)`` pixels in every camera."""
        K = (self._Ks() if K is None else K).to(pts.dtype)  # float64 points: the LM refinement's
        pc = torch.einsum("cij,blj->bcli", self.R.to(pts.dtype), pts) + self.t.to(pts.dtype)[None, :, None]
        z = pc[..., 2:3].clamp_min(1e-4)
        return pc[..., :2] / z * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[None, :, None] + K[None, :, None, :2, 2]

    def _flame(self, p: dict[str, torch.Tensor], idx: list[int] | slice) -> dict:
        kw = {k: p[k][idx] for k in PER_FRAME}
        B = kw["expr"].shape[0]
        kw["shape"] = p["shape"].expand(B, -1)
        if "static_offset" in p:
            kw["static_offset"] = p["static_offset"]
        return self.model(**kw)

    def _lmk_loss(self, out: dict, idx) -> torch.Tensor:
        uv = self.project(out[f"landmarks_{self.lmk_name}"])
        w = self.weight[idx]
        return (w * ((uv - self.target[idx]) ** 2).sum(-1)).sum() / w.sum().clamp_min(1.0)

    def _priors(self, p: dict, idx) -> torch.Tensor:
        c = self.cfg
        reg = c.w_shape * (p["shape"] ** 2).sum() + c.w_expr * (p["expr"][idx] ** 2).sum(-1).mean()
        reg = reg + c.w_pose * sum((p[k][idx] ** 2).sum(-1).mean() for k in ("neck_pose", "jaw_pose", "eyes_pose"))
        return reg

    def _adam(self, tensors: list[torch.Tensor], lrs: list[float]) -> torch.optim.Adam:
        return torch.optim.Adam([{"params": [t], "lr": lr} for t, lr in zip(tensors, lrs, strict=True)])

    # ------------------------------------------------------------------ stages
    def _rigid_init(self, p: dict, t: int) -> None:
        uv = self.target[t].cpu().numpy()
        conf = self.weight[t].cpu().numpy()
        with torch.no_grad():
            neutral = self.model(shape=p["shape"])
            L0 = neutral[f"landmarks_{self.lmk_name}"][0].cpu().numpy().astype(np.float64)
            J0 = neutral["joints"][0, 0].cpu().numpy().astype(np.float64)
        X, ok = triangulate(self.cams, uv, conf)
        if ok.sum() >= 6:
            R, tr, _ = umeyama(L0[ok], X[ok])
        else:  # one camera: place the head on the landmark ray at the eye-distance depth
            c = int(np.argmax((conf > 0).sum(1)))
            vis = conf[c] > 0
            cam = self.cams[c]
            spread3d = np.linalg.norm(L0[vis] - L0[vis].mean(0), axis=1).mean()
            spread2d = np.linalg.norm(uv[c, vis] - uv[c, vis].mean(0), axis=1).mean()
            depth = cam.K[0, 0] * spread3d / max(spread2d, 1e-6)
            ray = np.linalg.inv(cam.K) @ np.array([*uv[c, vis].mean(0), 1.0])
            pos = cam.cam_to_world[:3, :3] @ (ray * depth) + cam.center
            R = look_at_rotation(cam, pos)
            tr = pos - R @ L0[vis].mean(0)
        rot, trans = rigid_to_flame(R, tr, J0)
        with torch.no_grad():
            p["rotation"][t] = torch.as_tensor(rot, dtype=torch.float32)
            p["translation"][t] = torch.as_tensor(trans, dtype=torch.float32)

    def _fit_frame(self, p: dict, t: int, iters: int, names: list[str], with_shape: bool) -> float:
        loc = {k: p[k][t : t + 1].detach().clone().requires_grad_(True) for k in names}
        shape = p["shape"].detach().clone().requires_grad_(with_shape)
        lrs = [self.cfg.lr_shape if k == "expr" else self.cfg.lr_pose for k in names]
        opt = self._adam(list(loc.values()) + ([shape] if with_shape else []),
                         lrs + ([self.cfg.lr_shape] if with_shape else []))
        fixed = {k: p[k][t : t + 1].detach() for k in PER_FRAME if k not in names}
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iters * 0.7), int(iters * 0.9)], 0.3)
        loss = torch.tensor(0.0)
        for _ in range(iters):
            q = {**fixed, **loc, "shape": shape}
            out = self._flame(q, slice(0, 1))
            loss = self._lmk_loss(out, slice(t, t + 1)) * self.cfg.w_landmark + self._priors(q, slice(0, 1))
            if not torch.isfinite(loss):
                return float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            for k, v in loc.items():
                p[k][t] = v[0]
            if with_shape:
                p["shape"].copy_(shape)
        return float(loss.detach())

    def _render_terms(self, verts: torch.Tensor, frames: list[int], data_t: dict) -> torch.Tensor:
        """Silhouette and photometric terms on random frames / cameras; ``verts (len(frames), V, 3)``
        are the posed meshes of ``frames``, already computed by the caller."""
        c = self.cfg
        rows = [int(x) for x in self.rng.choice(len(frames), size=min(c.render_frames, len(frames)), replace=False)]
        ci = [int(x) for x in self.rng.choice(len(self.cams), size=min(c.render_cameras, len(self.cams)), replace=False)]
        vm = torch.eye(4, device=self.dev).repeat(len(ci), 1, 1)
        vm[:, :3, :3], vm[:, :3, 3] = self.R[ci], self.t[ci]
        K = self._Ks()[ci] * data_t["scale_k"]
        total = torch.zeros((), device=self.dev)
        for r in rows:
            t = frames[r]
            rgb, alpha = self.mesh.render(verts[r], self.colors, vm, K, data_t["W"], data_t["H"])
            views = [self._view(data_t, t, cam) for cam in ci]
            if data_t["masks"] is not None:
                care = torch.stack([v["care"] for v in views])
                mask = torch.stack([v["mask"] for v in views])
                total = total + c.w_silhouette * (care * (alpha[..., 0] - mask) ** 2).mean()
            if data_t["images"] is not None:
                m = torch.stack([v["inner"] for v in views])[..., None] if data_t["masks"] is not None else 1.0
                total = total + c.w_photometric * (m * (rgb - torch.stack([v["rgb"] for v in views]))).abs().mean()
        return total / len(rows)

    def _prepare_images(self, data: TrackingData) -> dict:
        """Render-scale sizes and the data's (possibly lazy) images and masks; the frames
        themselves are read one (frame, camera) at a time by :meth:`_view`."""
        s = self.cfg.render_scale
        W0, H0 = data.cameras[0].width, data.cameras[0].height
        W, H = max(2, round(W0 * s)), max(2, round(H0 * s))
        self._views = ViewCache(data.images, data.masks, (W, H), (W0, H0), self.cfg.silhouette_band, self.dev)
        # rows of K scale with the image axes: (fx, cx) by W / W0 and (fy, cy) by H / H0
        return {"W": W, "H": H, "W0": W0, "H0": H0, "images": data.images, "masks": data.masks,
                "scale_k": torch.tensor([[W / W0], [H / H0], [1.0]], device=self.dev)}

    def _view(self, data_t: dict, t: int, c: int) -> dict:
        """Frame ``t`` in camera ``c`` at the render scale (:class:`~.views.ViewCache`: ``rgb``,
        ``mask``, ``care``, ``inner`` float32 on the device; recent views kept as uint8)."""
        return self._views(t, c)

    def _init_colors(self, p: dict, t: int, data_t: dict) -> torch.Tensor:
        F_ = self.asset.num_faces
        if data_t["images"] is None:
            return torch.full((F_, 3), 0.5, device=self.dev)
        with torch.no_grad():
            v = self._flame(p, [t])["vertices"][0]
            cen = v[self.model.faces].mean(1)
            c = int(torch.argmin(self.R[:, 2, 2]))  # the most frontal camera
            uv = self.project(cen[None])[0, c] * data_t["scale_k"][:2, 0]
            x = uv[:, 0].long().clamp(0, data_t["W"] - 1)
            y = uv[:, 1].long().clamp(0, data_t["H"] - 1)
            return self._view(data_t, t, c)["rgb"][y, x].clamp(0.02, 0.98)

    # ------------------------------------------------------------------ main
    def track(self, data: TrackingData, progress: Progress | None = None,
              checkpoint: str | Path | None = None) -> TrackingResult:
        """Track all frames of ``data``.

        Args:
            progress: reporter; one task for the sequential pass (per frame) and one for the
                global pass (per iteration).
            checkpoint: folder of the tracker's checkpoint ``track.pt`` (``None``: none): written
                when the global pass starts (it holds the sequential pass), every
                ``config.checkpoint_every`` global iterations and on Ctrl-C; a tracker given
                a checkpoint of the same data and configuration continues from it (the
                result equals an uninterrupted run's) and removes it when done.

        Raises:
            TrackingError: fewer than ``min_frames`` usable frames (reasons listed).
            KeyboardInterrupt: Ctrl-C during the global pass (after writing a checkpoint).
        """
        cfg = self.cfg
        self._setup(data)
        ids = data.timestep_ids or [f"{t:05d}" for t in range(self.target.shape[0])]
        progress = progress or NULL_PROGRESS
        ck = None
        if checkpoint is not None and cfg.checkpoint_every > 0 and cfg.global_iters > 0:
            ck = ckpt.StageCheckpoint(checkpoint, "track", self._fingerprint(data), cfg.checkpoint_every)
        state = ck.load(self.dev) if ck is not None else None
        if state is not None:  # the sequential pass is in the checkpoint
            p, kept, flagged = state["p"], list(state["kept"]), list(state["flagged"])
        else:
            p, kept, flagged = self._sequential(data, ids, progress)
        self._global(p, kept, data, progress, flagged, ck, state)
        result = self._result(p, kept, ids, flagged, data)
        if ck is not None:
            ck.remove()
        return result

    def _sequential(self, data: TrackingData, ids: list[str], progress: Progress) -> tuple[dict, list[int], list[dict]]:
        """Frame by frame: ``(parameters of every frame, the kept frames, the flagged ones)``."""
        cfg = self.cfg
        T, C = self.target.shape[:2]
        flagged: list[dict] = []
        for c in range(C):
            if float(self.weight[:, c].sum()) == 0:
                flagged.append({"camera": data.cameras[c].serial, "reason": "no landmarks in any frame"})
        views = (self.weight.sum(-1) > 0.5 * self.weight.shape[-1] * 0.2).sum(1).cpu().numpy()
        kept = []
        for t in range(T):
            if views[t] < cfg.min_landmark_views:
                flagged.append({"timestep": ids[t], "reason": f"face found in {int(views[t])} camera(s), "
                                                               f"need {cfg.min_landmark_views}"})
            else:
                kept.append(t)
        z = lambda *s: torch.zeros(*s, device=self.dev)  # noqa: E731
        p = {"shape": z(1, self.S), "expr": z(T, self.E), "rotation": z(T, 3), "neck_pose": z(T, 3),
             "jaw_pose": z(T, 3), "eyes_pose": z(T, 6), "translation": z(T, 3)}
        frame_names = ["expr", "rotation", "neck_pose", "jaw_pose", "translation"]
        seq_of = data.sequence_ids or [""] * T
        done: list[int] = []
        seq_task = progress.task("tracking: sequential pass (frames)", total=len(kept))
        for n, t in enumerate(list(kept)):
            if n == 0:
                self._rigid_init(p, t)
                self._fit_frame(p, t, cfg.rigid_iters, ["rotation", "translation"], with_shape=False)
                loss = self._fit_frame(p, t, cfg.first_frame_iters, frame_names, with_shape=True)
                refined = refine_frame_lm(self, p, t, frame_names, True, cfg.first_frame_lm_iters)
                loss = loss if refined is None else refined
            else:
                prev = done[-1] if done else t
                with torch.no_grad():
                    for k in PER_FRAME:
                        p[k][t] = p[k][prev]
                new_seq = bool(done) and seq_of[t] != seq_of[prev]  # the head moved between takes
                if not done or new_seq:
                    self._rigid_init(p, t)
                if new_seq:
                    self._fit_frame(p, t, cfg.rigid_iters, ["rotation", "translation"], with_shape=False)
                loss = self._fit_frame(p, t, cfg.frame_iters, frame_names, with_shape=not done)
            if not np.isfinite(loss):
                flagged.append({"timestep": ids[t], "reason": "landmark loss became NaN"})
                continue
            done.append(t)
            seq_task.advance(info=f"frame {ids[t]}: landmark loss {loss:.4g}")
        seq_task.close()
        kept = done
        if len(kept) < cfg.min_frames:
            raise TrackingError(f"only {len(kept)} of {T} frames usable (need {cfg.min_frames}): "
                                + "; ".join(f"{f.get('timestep', f.get('camera'))}: {f['reason']}" for f in flagged))
        return p, kept, flagged

    def _fingerprint(self, data: TrackingData) -> dict:
        return {"stage": "track", "config": ckpt.result_config(self.cfg), "timesteps": list(data.timestep_ids),
                "sequences": list(data.sequence_ids or []), "faces": self.asset.num_faces,
                "inputs": ckpt.digest_arrays(data.landmarks, *[np.asarray(c.K) for c in data.cameras],
                                             *[np.asarray(c.world_to_cam) for c in data.cameras])}

    def _global(self, p: dict, kept: list[int], data: TrackingData, progress: Progress, flagged: list[dict],
                ck: ckpt.StageCheckpoint | None = None, state: dict | None = None) -> None:
        """The global pass; ``ck``: where to checkpoint, ``state``: a checkpoint to continue from."""
        cfg = self.cfg
        if cfg.global_iters == 0:
            return
        data_t = self._prepare_images(data)
        use_render = cfg.render_cameras > 0 and (data_t["images"] is not None or data_t["masks"] is not None)
        if use_render:
            self.mesh = MeshGaussians(self.model.faces, cfg.gaussians_per_face, self.dev)
            self.colors = self._init_colors(p, kept[0], data_t).requires_grad_(True)
        V = self.model.num_vertices
        params = {k: p[k].detach().clone().requires_grad_(True) for k in p}
        lap = None
        if cfg.optimize_static_offset:
            params["static_offset"] = torch.zeros(1, V, 3, device=self.dev, requires_grad=True)
            lap = laplacian_matrix(self.asset.faces, V).to(self.dev)
        groups = [(params["shape"], cfg.lr_shape * 0.2), (params["expr"], cfg.lr_shape * 0.2)]
        groups += [(params[k], cfg.lr_pose * 0.2) for k in PER_FRAME if k != "expr"]
        if cfg.optimize_static_offset:
            groups.append((params["static_offset"], cfg.lr_offset))
        if use_render:
            groups.append((self.colors, 0.02))
        if cfg.optimize_focal:
            groups.append((self.focal_scale, 1e-3))
        opt = self._adam([g[0] for g in groups], [g[1] for g in groups])
        idx = torch.as_tensor(kept, device=self.dev)
        seq_of = data.sequence_ids or [""] * len(data.landmarks)
        # smoothness links neighbouring kept frames of one sequence, never two sequences
        self._same_seq = torch.tensor([float(seq_of[a] == seq_of[b]) for a, b in zip(kept, kept[1:], strict=False)],
                                      device=self.dev)
        best = {k: v.detach().clone() for k, v in params.items()}
        start = 0
        if state is not None:
            start = int(state["it"])
            with torch.no_grad():
                for k, v in params.items():
                    v.copy_(state["params"][k])
                if use_render:
                    self.colors.copy_(state["colors"])
                self.focal_scale.copy_(state["focal_scale"])
            best.update({k: v.clone() for k, v in state["best"].items()})
            opt.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(self.rng, state["rng"], self.dev)

        def save(it: int) -> None:
            ck.save({"p": p, "kept": kept, "flagged": flagged, "it": it, "optimizer": opt.state_dict(),
                     "params": {k: v.detach() for k, v in params.items()}, "best": best,
                     "colors": self.colors.detach() if use_render else None, "focal_scale": self.focal_scale.detach(),
                     "rng": ckpt.rng_state(self.rng, self.dev)})

        with progress.task(f"tracking: global pass over {len(kept)} frames", total=cfg.global_iters) as task:
            task.update(completed=start)
            if ck is not None and state is None:
                save(0)  # the sequential pass, done
            with ckpt.deferred_interrupt() as interrupt:
                self._global_loop(params, kept, idx, data_t, use_render, lap, opt, best, flagged, task, start,
                                  lambda it: save(it) if ck is not None and (ck.due(it) or interrupt.requested) else None,
                                  interrupt)
        p.update(best)

    def _global_loop(self, params, kept, idx, data_t, use_render, lap, opt, best, flagged, task, start=0,
                     after=None, interrupt=None) -> None:
        """Iterations ``start..global_iters - 1``; ``after(it + 1)`` is called after each."""
        cfg = self.cfg
        for it in range(start, cfg.global_iters):
            out = self._flame(params, idx)
            loss = cfg.w_landmark * self._lmk_loss(out, idx) + self._priors(params, idx)
            if len(kept) > 1 and float(self._same_seq.sum()) > 0:
                same = self._same_seq
                loss = loss + cfg.w_temporal * sum(
                    (((params[k][idx[1:]] - params[k][idx[:-1]]) ** 2).sum(-1) * same).sum() / same.sum()
                    for k in PER_FRAME)
            if cfg.optimize_static_offset:
                so = params["static_offset"][0]
                loss = loss + cfg.w_static_offset * (so**2).sum(-1).mean() \
                    + cfg.w_laplacian * (torch.sparse.mm(lap, so) ** 2).sum(-1).mean()
            if use_render:
                loss = loss + self._render_terms(out["vertices"], kept, data_t)
            if not torch.isfinite(loss):
                flagged.append({"stage": "global", "reason": f"loss became NaN at iteration {it}; kept the last finite state"})
                break
            best.update({k: v.detach().clone() for k, v in params.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            task.advance(info=f"loss {float(loss.detach()):.4g}")
            if after is not None and it + 1 < cfg.global_iters:
                after(it + 1)
            if interrupt is not None and interrupt.requested:
                raise KeyboardInterrupt

    def _result(self, p: dict, kept: list[int], ids: list[str], flagged: list[dict], data: TrackingData) -> TrackingResult:
        with torch.no_grad():
            out = self._flame(p, kept)
            uv = self.project(out[f"landmarks_{self.lmk_name}"])
            w = self.weight[kept]
            err = ((uv - self.target[kept]).norm(dim=-1) * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1)
        pad = lambda a, n: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, n - a.shape[-1])])  # noqa: E731
        get = lambda k: p[k][kept].detach().cpu().numpy()  # noqa: E731
        shape = pad(p["shape"][0].detach().cpu().numpy(), N_SHAPE)
        so = p["static_offset"].detach().cpu().numpy() if "static_offset" in p else None
        params = FlameParams(rotation=get("rotation"), translation=get("translation"), neck_pose=get("neck_pose"),
                             jaw_pose=get("jaw_pose"), eyes_pose=get("eyes_pose"), shape=shape,
                             expr=pad(get("expr"), N_EXPR), static_offset=so,
                             timestep_id=np.array([ids[t] for t in kept]))
        cams = data.cameras
        if self.cfg.optimize_focal:
            cams = [geometry.with_focal_scale(c, float(self.focal_scale.detach())) for c in cams]
        metrics = {"landmark_error_px_mean": float(err.mean()), "landmark_error_px_per_frame": err.cpu().numpy().tolist(),
                   "frames_tracked": len(kept), "frames_total": len(ids), "focal_scale": float(self.focal_scale.detach())}
        detected = torch.cat([self.target[kept], self.weight[kept][..., None]], -1).cpu().numpy()
        return TrackingResult(params, kept, flagged, metrics, cams, uv.cpu().numpy().astype(np.float32),
                              detected.astype(np.float32))
