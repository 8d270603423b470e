"""Training the Gaussian decoder with the AR model frozen (``pointillist train-decoder``).

Paper section 4.4.2: for each identity the stored token sequence is teacher-forced through
the frozen AR model (hidden states cached on disk under the checkpoint's hash,
:mod:`.features`); the decoder turns the de-quantised points, those hidden states and the
AR model's conditioning context into canonical Gaussians; they are animated to a sampled
tracked timestep through their bindings (:class:`pointillist_data.animation.Animator`) and
rendered into sampled cameras (:func:`pointillist_data.render.render_gaussians`: the CPU
rasteriser, gsplat on CUDA) against the captured views composited over ``background``.
Loss ``1.0 L1 + 0.5 (1 - SSIM) + 0.1 LPIPS + 0.1 offset regulariser`` (paper weights;
pytorch-msssim's SSIM; LPIPS from local weights, :mod:`.lpips`). The loop, AdamW, bf16
autocast on CUDA, DDP and exact resume are :class:`~pointillist_model.trainer_base.BaseTrainer`'s.
Every ``render_every`` steps (and at the end) the held-out views are rendered into
``heldout.png`` (and ``renders/step_<N>.png``): prediction | ground truth with the PSNR per tile,
the mean logged as ``heldout_psnr``.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from pointillist_data.animation import Animator
from pointillist_data.errors import InputError
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.model import FlameModel
from pointillist_data.progress import Progress
from pointillist_data.render import render_gaussians
from pointillist_data.store.query import select_samples
from pointillist_data.store.supervision import SupervisionStore
from pointillist_data.store.supervision_dataset import SupervisionDataset
from pointillist_data.store.token_store import TokenStore
from pointillist_data.viz import contact_sheet, draw_text, save_png

from .config import POINT_SOURCES, DecoderTrainConfig
from .decoder import (
    DECODER_PRESETS,
    DecodedGaussians,
    DecoderConfig,
    GaussianDecoder,
    flame_vertex_binding,
)
from .features import HiddenCache, checkpoint_hash
from .lpips import load_lpips
from .train import flame_vertices_for_shapes, load_model, training_selection_error
from .trainer_base import (
    BaseTrainer,
    checkpoint_subjects,
    load_checkpoint,
)

__all__ = ["DecoderTrainConfig", "DecoderTrainer", "load_decoder", "psnr", "POINT_SOURCES"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    return 10 * math.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-12))


def decoder_config(cfg: DecoderTrainConfig, ar_dim: int, box) -> DecoderConfig:
    """The :class:`~pointillist_model.decoder.DecoderConfig` of ``cfg.preset`` for an AR model of
    width ``ar_dim`` and the store's quantisation ``box`` (a :class:`~pointillist_data.tokens.QuantBox`),
    with ``cfg.model`` on top."""
    return DecoderConfig(**{**DECODER_PRESETS[cfg.preset].to_dict(), "ar_dim": ar_dim, "cond_dim": ar_dim,
                            "box_lo": tuple(box.lo), "box_hi": tuple(box.hi), "inputs": cfg.inputs, **cfg.model})


class DecoderTrainer(BaseTrainer):
    """One decoder training run (single process, or one rank of ``torchrun``).

    Args:
        cfg: :class:`DecoderTrainConfig`.
        asset: the FLAME model the stores were made with.
        progress: reporter for filling the AR feature cache.

    Raises:
        InputError: no identity is in both stores, or more crops than the stores hold.
        LpipsWeightsError: bad LPIPS weights.
    """

    rate_name = "views_per_s"

    def __init__(self, cfg: DecoderTrainConfig, asset: FlameAsset, progress: Progress | None = None) -> None:
        torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
        super().__init__(cfg)
        self.asset = asset
        self.tokens = TokenStore.open(cfg.store)
        self.sup = SupervisionStore.open(cfg.supervision)
        chosen = {str(r["subject_id"]) for r in select_samples(self.tokens, cfg.split, cfg.where, "--where")}
        if not chosen:
            raise training_selection_error(self.tokens, cfg.split, cfg.where)
        self.views = SupervisionDataset(self.sup, background=cfg.background, split=cfg.split, where=cfg.where,
                                        tokens=self.tokens)
        sup_ids = set(self.sup.subject_ids())
        ids = [(i, s) for i, s in enumerate(self.tokens.subject_ids()) if s in sup_ids and s in chosen]
        if not ids:
            raise InputError(cfg.supervision, f"no identity of {cfg.store} in the training selection has supervision "
                             "here")
        self.identities = ids[self.rank::self.world_size] or ids
        self.seen_subjects = sorted({s for _, s in ids})  # every rank's; grows on resume (load_extra_state)
        # the AR model's features feed the decoder: what it was trained on counts as seen too
        self.ar_subjects = checkpoint_subjects(cfg.ar_checkpoint)
        max_crops = 1 + int(self.sup.attrs["crops_per_identity"])
        if cfg.crops > max_crops:
            raise InputError("--crops", f"{cfg.crops} crops asked, the stores hold {max_crops} per identity")
        self.ar = load_model(cfg.ar_checkpoint, str(self.device)).requires_grad_(False)
        self.ar_hash = checkpoint_hash(cfg.ar_checkpoint)
        self.decoder_config = decoder_config(cfg, self.ar.config.dim, self.tokens.box)
        self.setup_optimizer(GaussianDecoder(self.decoder_config).to(self.device))
        self.flame = FlameModel(asset).to(self.device)
        self.cache = HiddenCache(cfg.cache_dir or self.out / "ar_features", self.ar_hash)
        self._fill_cache(progress)
        self.lpips = load_lpips(cfg.lpips_weights, self.device) if cfg.w_lpips > 0 else None
        self.rng = np.random.default_rng([cfg.seed, self.rank])
        self._inputs: OrderedDict = OrderedDict()
        self._animators: dict[int, Animator] = {}
        cfg.save(self.out / "decoder_train_config.json")

    # ------------------------------------------------------------------ data
    def _fill_cache(self, progress: Progress | None) -> None:
        shapes = np.asarray(self.tokens.group["flame_shape"][: len(self.tokens)])
        items = []
        for i, sid in self.identities:
            verts = flame_vertices_for_shapes(self.asset, shapes[i:i + 1])[0]
            crops = [np.asarray(self.tokens.group["image"][i])]
            if self.cfg.crops > 1:
                crops += list(self.sup.crops(self.sup.index(sid))[0][: self.cfg.crops - 1])
            tok = self.tokens.tokens(i)
            items += [(sid, c, tok, img, verts) for c, img in enumerate(crops)]
        self.cache.fill(self.ar, items, with_hidden=self.model.needs_features, window=self.cfg.window,
                        stride=self.cfg.stride, progress=progress)

    def animator(self, sup_index: int) -> Animator:
        """The FLAME animator of an identity (its tracked shape and static offset)."""
        if sup_index not in self._animators:
            p = self.views.params(sup_index)
            self._animators[sup_index] = Animator(self.flame, torch.as_tensor(p.shape), None if p.static_offset is None
                                                  else torch.as_tensor(p.static_offset)).to(self.device)
        return self._animators[sup_index]

    def inputs(self, token_index: int, subject: str, crop: int) -> tuple[torch.Tensor, torch.Tensor, Any, torch.Tensor]:
        """``(points (N, 3), binding (N,), hidden (N, 4, dim) memory-mapped or None, cond (M, dim))``."""
        key = (subject, crop)
        if key not in self._inputs:
            hidden, ctx = self.cache.get(subject, crop)
            if self.cfg.points == "flame":
                an = self.animator(self.sup.index(subject))
                pts = an.canonical_vertices.float()
                bind = torch.as_tensor(flame_vertex_binding(self.asset.faces, len(pts)), device=self.device)
                hidden = None
            else:
                p, b = self.tokens.to_points(token_index)
                pts = torch.as_tensor(p, dtype=torch.float32, device=self.device)
                bind = torch.as_tensor(b, dtype=torch.long, device=self.device)
                hidden = hidden.reshape(len(p), 4, -1) if hidden is not None and self.model.needs_features else None
            self._inputs[key] = (pts, bind, hidden, torch.as_tensor(ctx, device=self.device))
            while len(self._inputs) > 8:  # hidden states are memory-mapped; keep a few identities
                self._inputs.popitem(last=False)
        return self._inputs[key]

    def decode(self, token_index: int, subject: str, crop: int = 0,
               subset: np.ndarray | None = None) -> tuple[DecodedGaussians, torch.Tensor]:
        """Canonical Gaussians ``(1, N, ...)`` of an identity and their binding ``(N,)``."""
        pts, bind, hidden, cond = self.inputs(token_index, subject, crop)
        if subset is not None:
            pts, bind = pts[subset], bind[subset]
            hidden = None if hidden is None else hidden[np.asarray(subset)]
        h = None if hidden is None else torch.as_tensor(np.array(hidden), device=self.device)[None]
        # without gradients there is nothing to synchronise: the bare model lets rank 0 render alone
        net = self.ddp if torch.is_grad_enabled() else self.model
        with self.autocast():
            out = net(pts[None], h, cond[None])
        return DecodedGaussians(*(t.float() for t in out)), bind

    def render(self, g: DecodedGaussians, binding: torch.Tensor, sup_index: int, timestep: int,
               cameras: list[int]) -> torch.Tensor:
        """Animate ``g`` to a timestep and render ``(C, h, w, 3)`` into the identity's cameras."""
        p = self.views.params(sup_index).frame(int(timestep))
        an = self.animator(sup_index)
        a = an.animate(g.means[0], binding, p.to_torch(self.device), g.scales[0], g.quats[0], self.cfg.animation)
        Ks, M = self.views.cameras(sup_index)
        H, W = self.sup.image_size
        s = self.cfg.render_scale
        h, w = max(1, round(H * s)), max(1, round(W * s))
        K = torch.as_tensor(Ks[cameras], device=self.device).clone()
        K[:, 0] *= w / W
        K[:, 1] *= h / H
        vm = torch.as_tensor(M[cameras], device=self.device)
        bg = torch.full((len(cameras), 3), self.cfg.background, device=self.device)
        return render_gaussians(a.means[0], a.quats[0], a.scales[0], g.opacity[0], g.rgb[0], vm, K, w, h, bg).rgb

    def targets(self, sup_index: int, timestep: int, cameras: list[int]) -> torch.Tensor:
        """Captured views ``(C, h, w, 3)`` composited over the background (area-resized)."""
        gt = torch.stack([self.views[self.views.flat_index(sup_index, timestep, c)]["rgb"] for c in cameras])
        gt = gt.to(self.device)
        if self.cfg.render_scale < 1:
            H, W = self.sup.image_size
            size = (max(1, round(H * self.cfg.render_scale)), max(1, round(W * self.cfg.render_scale)))
            gt = F.interpolate(gt.permute(0, 3, 1, 2), size, mode="area").permute(0, 2, 3, 1)
        return gt

    def train_cameras(self, sup_index: int) -> list[int]:
        held = set(self.cfg.holdout_serials)
        cams = [c for c, cam in enumerate(self.sup.cameras(sup_index)) if cam.serial not in held]
        if not cams:
            raise InputError("--holdout", "every camera of an identity is held out")
        return cams

    # ------------------------------------------------------------------ training
    def task_label(self) -> str:
        return f"training the decoder ({self.cfg.preset} preset)"

    def compute_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, rng = self.cfg, self.rng
        done, parts = 0.0, {"l1": 0.0, "ssim": 0.0, "lpips": 0.0, "offset_reg": 0.0}
        for b in range(cfg.batch_size):
            ti, sid = self.identities[int(rng.integers(len(self.identities)))]
            crop = int(rng.integers(cfg.crops))
            si = self.sup.index(sid)
            n = len(self.inputs(ti, sid, crop)[0])
            subset = None
            if cfg.points_per_step is not None and cfg.points_per_step < n:
                subset = np.sort(rng.choice(n, cfg.points_per_step, replace=False))
            g, bind = self.decode(ti, sid, crop, subset)
            K = int(self.sup.counts[si, 0])
            k = int(rng.integers(K))
            train = self.train_cameras(si)
            cams = sorted(rng.choice(train, min(cfg.cameras_per_step, len(train)), replace=False).tolist())
            pred = self.render(g, bind, si, k, cams)
            gt = self.targets(si, k, cams)
            l1 = (pred - gt).abs().mean()
            win = min(11, (min(pred.shape[1:3]) // 2) * 2 - 1)
            s = ssim(pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2), data_range=1.0, size_average=True, win_size=win)
            lp = self.lpips(pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2)).mean() if self.lpips else pred.new_zeros(())
            reg = (g.offsets ** 2).sum(-1).mean() / self.decoder_config.max_offset ** 2
            loss = (cfg.w_l1 * l1 + cfg.w_ssim * (1 - s) + cfg.w_lpips * lp + cfg.w_offset * reg) / cfg.batch_size
            for name, v in (("l1", l1), ("ssim", s), ("lpips", lp), ("offset_reg", reg)):
                parts[name] += float(v.detach()) / cfg.batch_size
            if b < cfg.batch_size - 1:
                # identities differ in size: back-propagate each now (one graph in memory at a
                # time), gradients synchronised across ranks only with the last one
                with self.ddp.no_sync() if self.dist else nullcontext():
                    loss.backward()
                done += float(loss.detach())
        return loss + done, {**parts, "count": float(cfg.batch_size * cfg.cameras_per_step)}

    @torch.no_grad()
    def evaluate(self, serials: list[str] | None = None, crop: int = 0) -> dict[str, Any]:
        """PSNR (dB) of every identity's views in ``serials`` (default: the held-out cameras)
        at every stored timestep, all points decoded jointly as at inference."""
        serials = list(serials if serials is not None else self.cfg.holdout_serials)
        self.model.eval()
        per = {}
        for ti, sid in self.identities:
            si = self.sup.index(sid)
            cams = [c for c, cam in enumerate(self.sup.cameras(si)) if cam.serial in serials]
            if not cams:
                continue
            g, bind = self.decode(ti, sid, crop)
            vals = [psnr(self.render(g, bind, si, k, cams), self.targets(si, k, cams))
                    for k in range(int(self.sup.counts[si, 0]))]
            per[sid] = float(np.mean(vals))
        self.model.train()
        return {"psnr": float(np.mean(list(per.values()))) if per else float("nan"), "per_identity": per,
                "serials": serials}

    def snapshot_every(self) -> int:
        return self.cfg.render_every

    @torch.no_grad()
    def snapshot(self, max_identities: int = 4, max_cameras: int = 3) -> dict[str, float]:
        """Render the held-out views (the first camera when none is held out) of up to
        ``max_identities`` identities at their first and last stored timestep into
        ``heldout.png`` and ``renders/step_<N>.png``: each tile prediction | ground truth, labelled
        with identity, camera serial, timestep and PSNR (dB). Returns ``{"heldout_psnr": mean}``
        (``{}`` without held-out cameras, whose views were trained on)."""
        held = set(self.cfg.holdout_serials)
        self.model.eval()
        tiles, labels, values = [], [], []
        for ti, sid in self.identities[:max_identities]:
            si = self.sup.index(sid)
            serials = [cam.serial for cam in self.sup.cameras(si)]
            cams = [c for c, s in enumerate(serials) if s in held][:max_cameras] or [0]
            g, bind = self.decode(ti, sid)
            K = int(self.sup.counts[si, 0])
            for k in sorted({0, K - 1}):
                pred, gt = self.render(g, bind, si, k, cams).clamp(0, 1), self.targets(si, k, cams)
                for j, c in enumerate(cams):
                    v = psnr(pred[j], gt[j])
                    values.append(v)
                    pair = torch.cat([pred[j], gt[j]], 1).cpu().numpy()
                    tiles.append((pair * 255 + 0.5).astype(np.uint8))
                    labels.append(f"{sid} cam {serials[c]} t{k}: {v:.1f} dB")
        self.model.train()
        sheet = contact_sheet([draw_text(t, lab, (2, t.shape[0] - 12)) for t, lab in zip(tiles, labels, strict=True)],
                              cols=min(len(tiles), 3))
        sheet = draw_text(sheet, f"step {self.step}: prediction | ground truth" + ("" if held else
                          " (no held-out camera: a training view)"), (3, 3))
        save_png(sheet, self.out / "renders" / f"step_{self.step:06d}.png")
        save_png(sheet, self.out / "heldout.png")
        return {"heldout_psnr": float(np.mean(values))} if held else {}

    def extra_state(self) -> dict[str, Any]:
        return {"decoder_config": self.decoder_config.to_dict(), "ar_checkpoint": str(self.cfg.ar_checkpoint),
                # from the decoder's folder: a copied model folder finds its own AR (load_decoder)
                "ar_checkpoint_relative": os.path.relpath(Path(self.cfg.ar_checkpoint).resolve(), self.out.resolve()),
                # the identities trained on (``evaluate`` refuses to score them); None: the AR
                # checkpoint does not record its own
                "subject_ids": list(self.seen_subjects), "train_split": self.cfg.split,
                "train_where": self.cfg.where, "ar_subject_ids": self.ar_subjects,
                "ar_hash": self.ar_hash, "quant_box": self.tokens.box.to_dict(), "sampler": self.rng.bit_generator.state,
                "points": self.cfg.points, "animation": self.cfg.animation, "background": self.cfg.background}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("ar_hash") != self.ar_hash:
            raise InputError(self.cfg.ar_checkpoint, "this AR checkpoint is not the one the decoder checkpoint was "
                             "trained with (hash differs)")
        self.rng.bit_generator.state = state["sampler"]
        self.seen_subjects = sorted(set(self.seen_subjects) | {str(s) for s in state.get("subject_ids") or []})


def load_decoder(checkpoint: str | Path, device: str = "cpu") -> tuple[GaussianDecoder, dict[str, Any]]:
    """The decoder from a checkpoint (eval mode) and its metadata (``ar_checkpoint``,
    ``ar_hash``, ``quant_box``, ``points``, ``animation``, ``background``, ``train_config``).

    Raises:
        FileNotFoundError: no such file. InputError: not a decoder checkpoint.
    """
    p = Path(checkpoint)
    if not p.exists():
        raise FileNotFoundError(f"{p}: decoder checkpoint not found")
    s = load_checkpoint(p, device)
    if "decoder_config" not in s:
        raise InputError(str(p), "not a decoder checkpoint (no decoder_config)")
    model = GaussianDecoder(DecoderConfig(**s["decoder_config"])).to(device)
    model.load_state_dict(s["model"])
    meta = {k: s.get(k) for k in ("ar_checkpoint", "ar_hash", "quant_box", "points", "animation", "background",
                                  "train_config", "step", "subject_ids", "ar_subject_ids")}
    meta["ar_checkpoint"] = _resolve_ar(p, s)
    return model.eval(), meta


def _resolve_ar(decoder: Path, state: dict[str, Any]) -> str | None:
    """The decoder's AR checkpoint: at its recorded place relative to the decoder's folder
    first (a copied or moved model folder uses its own AR), if that file has the recorded
    ``ar_hash``; else the path recorded at training time."""
    rel = state.get("ar_checkpoint_relative")
    if rel:
        cand = Path(os.path.normpath(decoder.parent / rel))
        if cand.is_file() and (state.get("ar_hash") is None or checkpoint_hash(cand) == state["ar_hash"]):
            return str(cand)
    return state.get("ar_checkpoint")
