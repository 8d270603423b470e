"""The paper's evaluation protocol (section 5.3, Tables 1 and 2): ``pointillist evaluate``.

For every test identity (the ``test`` list of a split manifest, :mod:`pointillist_data.manifests`,
present in both the token and the supervision store):

* **source**: the view of the most frontal camera (:func:`~pointillist_data.store.supervision_build.frontal_order`)
  at an intermediate timestep (the first and last 10 % excluded) with minimal occlusion,
  scored by the tracked head and neck rotation (the smaller, the less of the face turns away);
  ties within 5 degrees of the best are broken by the seeded generator (the paper: "randomly
  chosen from intermediate frames with minimal occlusion"). Its centred square crop, framed
  like the token store's portraits, is the one input image.
* **avatar**: ``points="generated"`` (the paper's one-shot path) samples the point cloud, its
  bindings and hidden states from the AR model conditioned on the source crop and decodes it
  (:func:`pointillist_model.avatar.avatar_from_portrait`, tracked shape); ``points="stored"``
  decodes the identity's stored cloud teacher-forced with the store's portrait (what the
  decoder trained on: isolates the decoder from AR sampling; the demo uses it).
* **self-reenactment**: the avatar is driven by the identity's own tracked FLAME parameters at
  every other stored timestep and rendered into the evaluation cameras; compared with the
  captured views composited over the decoder's background: PSNR, SSIM, LPIPS, AKD, APD per
  frame, FID of all renders against all captured views.
* **cross-reenactment**: one fixed motion, the driver identity's tracked sequence, drives every
  other test identity (expression, jaw, neck, eyes and head pose; the target's own shape),
  rendered into the driver's evaluation cameras: AKD and APD against the driver's captured
  frames, CLIP identity score against the target's source crop, and FID against all captured
  views of the test identities. A real capture has no picture of the target making the
  driver's motion; given ``cross_truth`` (a synthetic capture's
  :class:`~pointillist_data.capture.synthetic_truth.SyntheticTruth`: the target's true
  Gaussians under the driver's true motion), PSNR / SSIM / LPIPS against it as well.

Figures are averaged per identity, then over identities (FID over all frames at once). The
generator is seeded by ``seed`` (source and driver choice; AR sampling uses ``seed + i`` for
the ``i``-th identity), and PyTorch's deterministic kernels are on, so a seed reproduces every
figure. :mod:`.evaluate_report` writes the JSON, the Markdown report and the pictures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pointillist_data.animation import Animator
from pointillist_data.errors import InputError
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.model import FlameModel
from pointillist_data.flame.params import FlameParams
from pointillist_data.portrait import portrait_crop
from pointillist_data.progress import NULL_PROGRESS, Progress
from pointillist_data.render import render_gaussians
from pointillist_data.store.supervision import PER_TIMESTEP, SupervisionStore
from pointillist_data.store.supervision_build import frontal_order
from pointillist_data.store.token_store import TokenStore

from .avatar import Avatar, AvatarConfig, avatar_from_portrait, decode_avatar
from .config import POINT_MODES, EvalConfig
from .decoder import flame_vertex_binding
from .decoder_train import load_decoder
from .metrics.suite import MetricSuite

__all__ = ["EvalConfig", "POINT_MODES", "test_identities", "seen_in_training", "choose_source", "evaluate"]

def test_identities(split: str | None, tokens: TokenStore, sup: SupervisionStore) -> tuple[list[str], dict]:
    """The identities to evaluate and a record of where they came from.

    Raises:
        InputError: an unreadable or invalid split, or no test identity in both stores.
    """
    import json

    from pointillist_data.manifests import validate_manifest

    both = [s for s in tokens.subject_ids() if s in set(sup.subject_ids())]
    stored_test = [str(r["subject_id"]) for r in tokens.quality_table() if r["split"] == "test"]
    if split is None and stored_test:
        ids = [s for s in stored_test if s in set(both)]
        rec = {"split": None, "note": "the token store's test split", "missing": [s for s in stored_test
                                                                                  if s not in set(both)]}
    elif split is None:
        ids, rec = both, {"split": None, "note": "no split given and none in the store: every identity in both stores"}
    else:
        try:
            doc = json.loads(Path(split).read_text())
            validate_manifest(doc, "split")
        except (OSError, ValueError) as e:
            raise InputError(str(split), f"not a readable split manifest ({str(e).splitlines()[0][:120]})") from None
        want = [str(s) for s in doc["test"]]
        ids = [s for s in want if s in set(both)]
        rec = {"split": str(split), "split_seed": doc["seed"], "n_test": doc["n_test"],
               "missing": [s for s in want if s not in set(both)]}
    if not ids:
        raise InputError(str(split or tokens.root), "no test identity is in both the token and the supervision store")
    return ids, rec


def seen_in_training(ids: list[str], meta: dict, ar: str | None = None, allow_seen: bool = False,
                     decoder: str = "--decoder") -> dict[str, Any]:
    """Check that no identity to score was trained on: the decoder checkpoint's
    ``subject_ids``, the ``ar_subject_ids`` it copied from its AR checkpoint together with
    those that AR checkpoint records now (it may have been trained further), or those of ``ar``
    when another AR checkpoint is given (``--ar``).

    Returns:
        The record the results keep: ``scored``, ``seen`` (scored identities trained on),
        ``trained_on`` per checkpoint (``None``: not recorded) and ``allow_seen``.

    Raises:
        InputError: (unless ``allow_seen``) an identity to score was trained on, or a
            checkpoint records no training identities, so unseen cannot be shown.
    """
    from .trainer_base import checkpoint_subjects

    trained = {"decoder": meta.get("subject_ids"), "ar": meta.get("ar_subject_ids")}
    if ar is not None and str(ar) != str(meta.get("ar_checkpoint")):
        trained["ar"] = checkpoint_subjects(ar)
    elif meta.get("ar_checkpoint") and Path(meta["ar_checkpoint"]).is_file():
        # the AR file as it is now: trained further (perhaps on more identities) since the decoder copied its list
        now = checkpoint_subjects(meta["ar_checkpoint"])
        if now is not None:
            trained["ar"] = sorted(set(trained["ar"] or []) | set(now))
    union = set().union(*(set(v) for v in trained.values() if v is not None))
    seen = [s for s in ids if s in union]
    unknown = [k for k, v in trained.items() if v is None]
    if not allow_seen and seen:
        by = ", ".join(f"{s} ({' and '.join(k for k, v in trained.items() if v and s in v)})" for s in seen)
        raise InputError(decoder, f"refusing to score identities the checkpoints trained on: {by}; score the test "
                         "split (--split, or the store's), or pass --allow-seen to score them anyway (the report "
                         "then says so)")
    if not allow_seen and unknown:
        raise InputError(decoder, f"the {' and '.join(unknown)} checkpoint records no training identities (written "
                         "before the record existed), so the scored identities cannot be shown unseen; retrain, or "
                         "pass --allow-seen (the report then says so)")
    return {"scored": list(ids), "seen": seen, "trained_on": trained, "allow_seen": bool(allow_seen)}


def choose_source(params: FlameParams, world_to_cam: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """``(timestep, camera)`` of the source view (see the module docstring)."""
    K = params.num_frames
    if K >= 3:  # intermediate: never the first or the last timestep, nor the outer 10 %
        lo = max(1, math.ceil(0.1 * K))
        hi = max(lo, min(K - 2, math.floor(0.9 * K) - 1))
    else:
        lo, hi = 0, K - 1
    cand = np.arange(lo, hi + 1)
    turn = np.degrees(np.linalg.norm(np.asarray(params.rotation)[cand], axis=-1)
                      + np.linalg.norm(np.asarray(params.neck_pose)[cand], axis=-1))
    best = cand[turn <= turn.min() + 5.0]
    return int(rng.choice(best)), int(frontal_order(world_to_cam)[0])


def _pick(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``n`` (the frames shown in the pictures)."""
    return sorted(set(np.linspace(0, n - 1, min(n, max(k, 1))).round().astype(int).tolist()))


def _spread(ts: list[int], n: int | None) -> list[int]:
    if n is None or len(ts) <= n:
        return ts
    return [ts[i] for i in np.linspace(0, len(ts) - 1, n).round().astype(int)]


class _Scene:
    """Views, cameras and tracked parameters of one identity at the evaluation resolution."""

    def __init__(self, sup: SupervisionStore, sid: str, serials: list[str] | None, scale: float, bg: float) -> None:
        self.sup, self.sid, self.i, self.bg = sup, sid, sup.index(sid), bg
        cams = sup.cameras(self.i)
        self.params = sup.params(self.i)
        self.w2c = np.stack([c.world_to_cam for c in cams]).astype(np.float32)
        Ks = np.stack([c.K for c in cams]).astype(np.float32)
        self.serials = [c.serial for c in cams]
        self.eval_cams = [c for c, s in enumerate(self.serials) if serials is None or s in serials]
        H, W = sup.image_size
        self.h, self.w = max(1, round(H * scale)), max(1, round(W * scale))
        self.K = Ks.copy()
        self.K[:, 0] *= self.w / W
        self.K[:, 1] *= self.h / H

    def view(self, k: int, c: int) -> np.ndarray:
        """Captured view ``(h, w, 3)`` uint8 composited over the background (area-resized)."""
        rgb, mask = self.sup.view(self.i, k, c)
        m = mask.astype(np.float32)[..., None] / 255.0
        x = torch.from_numpy(rgb.astype(np.float32) / 255.0 * m + self.bg * (1 - m)).permute(2, 0, 1)[None]
        if x.shape[2:] != (self.h, self.w):
            x = F.interpolate(x, (self.h, self.w), mode="area")
        return (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)

    def motion(self, k: int) -> dict[str, torch.Tensor]:
        return {key: torch.as_tensor(np.asarray(getattr(self.params, key)[k:k + 1]), dtype=torch.float32)
                for key in PER_TIMESTEP}


@torch.no_grad()
def _render(avatar: Avatar, motion: dict[str, torch.Tensor], scene: _Scene, cams: list[int], mode: str,
            bg: float) -> np.ndarray:
    """The avatar under one timestep's ``motion`` seen by ``scene``'s cameras: ``(C, h, w, 3)`` uint8."""
    g = avatar.gaussians
    dev = g.means.device
    a = avatar.animator.animate(g.means[0], avatar.binding, {k: v.to(dev) for k, v in motion.items()}, g.scales[0],
                                g.quats[0], mode)
    vm = torch.as_tensor(scene.w2c[cams], device=dev)
    K = torch.as_tensor(scene.K[cams], device=dev)
    r = render_gaussians(a.means[0], a.quats[0], a.scales[0], g.opacity[0], g.rgb[0], vm, K, scene.w, scene.h,
                         torch.full((len(cams), 3), bg, device=dev))
    return (r.rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _stored_avatar(cfg: EvalConfig, tokens: TokenStore, sid: str, scene: _Scene, asset: FlameAsset,
                   decoder, meta: dict, ar) -> Avatar:
    from .features import HiddenCache, checkpoint_hash
    from .train import flame_vertices_for_shapes

    dev = cfg.device
    ti = tokens.subject_ids().index(sid)
    p = scene.params
    an = Animator(FlameModel(asset).to(dev), torch.as_tensor(p.shape, device=dev),
                  None if p.static_offset is None else torch.as_tensor(p.static_offset, device=dev))
    cache = HiddenCache(cfg.feature_cache or Path(cfg.out) / "ar_features", checkpoint_hash(cfg.ar))
    shapes = np.asarray(tokens.group["flame_shape"][ti:ti + 1])
    cache.fill(ar, [(sid, 0, tokens.tokens(ti), np.asarray(tokens.group["image"][ti]),
                     flame_vertices_for_shapes(asset, shapes)[0])], with_hidden=decoder.needs_features)
    hidden, ctx = cache.get(sid, 0)
    if meta.get("points") == "flame":
        pts = an.canonical_vertices.float()
        bind = torch.as_tensor(flame_vertex_binding(asset.faces, len(pts)), device=dev)
        hid = None
    else:
        pp, bb = tokens.to_points(ti)
        pts = torch.as_tensor(pp, dtype=torch.float32, device=dev)
        bind = torch.as_tensor(bb, dtype=torch.long, device=dev)
        hid = torch.as_tensor(np.array(hidden), device=dev).reshape(len(pp), 4, -1) if decoder.needs_features else None
    return decode_avatar(decoder, pts, bind, hid, torch.as_tensor(ctx, device=dev), an, np.asarray(p.shape))


def evaluate(cfg: EvalConfig, asset: FlameAsset, progress: Progress | None = None,
             avatar_fn: Callable[[str, np.ndarray, FlameParams], Avatar] | None = None,
             cross_truth: Callable[..., np.ndarray] | None = None) -> dict[str, Any]:
    """Run the protocol; returns the results (``protocol``, ``self``, ``cross``) and, under
    ``_frames`` (not serialised), the source crops and the ``strip_frames`` frames per identity
    that the pictures show (FID keeps features only, so memory stays bounded).

    Args:
        avatar_fn: ``(subject_id, source crop (S, S, 3) uint8, tracked FLAME parameters) ->
            Avatar`` replaces the decoder's avatar (``cfg.points`` is then unused): another
            method, or a known avatar, under the same protocol, cameras and metrics.
        cross_truth: ``(target, driver, driver timestep_id, world_to_cam (C, 4, 4), K (C, 3, 3),
            width, height, background) -> (C, H, W, 3) uint8`` the reference image of the
            target under the driver's motion in the driver's evaluation cameras; the
            cross-reenactment rows then add PSNR / SSIM / LPIPS against it (``None``: no
            reference, as for a real capture).

    Raises:
        InputError: bad split, stores or cameras. MetricWeightsError / MetricUnavailableError:
        a requested metric lacks its weights or its extra.
    """
    from .train import load_model

    progress = progress or NULL_PROGRESS
    torch.use_deterministic_algorithms(True, warn_only=True)
    tokens, sup = TokenStore.open(cfg.store), SupervisionStore.open(cfg.supervision)
    ids, split_rec = test_identities(cfg.split, tokens, sup)
    decoder, meta = load_decoder(cfg.decoder, cfg.device)
    seen_rec = seen_in_training(ids, meta, cfg.ar, cfg.allow_seen)
    cfg.ar = cfg.ar or meta["ar_checkpoint"]
    mode = cfg.animation or meta.get("animation") or "barycentric"
    bg = float(meta.get("background") if meta.get("background") is not None else 1.0)
    train_cfg = meta.get("train_config") or {}
    serials = cfg.cameras if cfg.cameras else (list(train_cfg.get("holdout_serials") or []) or None)
    suite = MetricSuite(cfg.metrics, cfg.lpips_weights, cfg.inception_weights, cfg.clip_weights, asset, cfg.device)
    rng = np.random.default_rng(cfg.seed)
    scenes = {s: _Scene(sup, s, serials, cfg.render_scale, bg) for s in ids}
    for s, sc in scenes.items():
        if not sc.eval_cams:
            raise InputError("--camera", f"identity {s} has none of the evaluation cameras {serials}")
    sources = {s: choose_source(scenes[s].params, scenes[s].w2c, rng) for s in ids}
    driver = cfg.driver if cfg.driver is not None else str(rng.choice(ids))
    if driver not in scenes:
        if driver not in sup.subject_ids():
            raise InputError("--driver", f"'{driver}' is not in {cfg.supervision}")
        scenes[driver] = _Scene(sup, driver, serials, cfg.render_scale, bg)
        sources[driver] = choose_source(scenes[driver].params, scenes[driver].w2c, rng)
    ar = load_model(cfg.ar, cfg.device).requires_grad_(False) if cfg.points == "stored" and not avatar_fn else None
    portrait = int(tokens.group["image"].shape[1])

    frames: dict[str, dict] = {}
    feats: dict[str, list] = {"self_pred": [], "self_gt": [], "cross_pred": []}
    self_rows, cross_rows = [], []
    targets = [s for s in ids if s != driver] or ids  # a lone identity drives itself
    dsc = scenes[driver]
    d_ts = _spread([k for k in range(dsc.params.num_frames) if k != sources[driver][0]] or [0], cfg.max_timesteps)
    with progress.task("evaluate", total=len(ids)) as task:
        for n, sid in enumerate(ids):
            sc = scenes[sid]
            k0, c0 = sources[sid]
            frame = sup.view(sc.i, k0, c0)[0]
            src = portrait_crop(frame, portrait)  # framed as the store's portraits
            if avatar_fn is not None:
                av = avatar_fn(sid, src, sc.params)
            elif cfg.points == "generated":
                ident = FlameParams.zeros(1, num_vertices=asset.num_vertices)
                ident.shape = np.asarray(sc.params.shape)
                # the raw frame: avatar_from_portrait prepares it as generate-points and avatar do
                av, _ = avatar_from_portrait(frame, cfg.decoder, asset, AvatarConfig(
                    max_points=cfg.max_points, min_points=cfg.min_points, temperature=cfg.temperature,
                    top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed + n, device=cfg.device, animation=mode),
                    ident, cfg.ar)
            else:
                av = _stored_avatar(cfg, tokens, sid, sc, asset, decoder, meta, ar)
            ts = _spread([k for k in range(sc.params.num_frames) if k != k0] or [k0], cfg.max_timesteps)
            pred, gt, keys = [], [], []
            for k in ts:
                pred += list(_render(av, sc.motion(k), sc, sc.eval_cams, mode, bg))
                gt += [sc.view(k, c) for c in sc.eval_cams]
                keys += [(k, sc.serials[c]) for c in sc.eval_cams]
            pred, gt = np.stack(pred), np.stack(gt)
            per = suite.self_frames(pred, gt)
            self_rows += [{"identity": sid, "timestep": k, "camera": s, **{m: v[j] for m, v in per.items()}}
                          for j, (k, s) in enumerate(keys)]
            feats["self_pred"].append(suite.fid_features(pred))
            feats["self_gt"].append(suite.fid_features(gt))
            keep = _pick(len(pred), cfg.strip_frames)  # only what the pictures show stays in memory
            fr = {"source": src, "self_pred": pred[keep], "self_gt": gt[keep], "self_keys": [keys[j] for j in keep]}
            if sid in targets:
                cp, cg, ck, ct = [], [], [], []
                for k in d_ts:
                    cp += list(_render(av, dsc.motion(k), dsc, dsc.eval_cams, mode, bg))
                    cg += [dsc.view(k, c) for c in dsc.eval_cams]
                    ck += [(k, dsc.serials[c]) for c in dsc.eval_cams]
                    if cross_truth is not None:
                        tid = str(dsc.params.timestep_id[k]) if dsc.params.timestep_id is not None else f"{k:05d}"
                        ct += list(cross_truth(sid, driver, tid, dsc.w2c[dsc.eval_cams], dsc.K[dsc.eval_cams],
                                               dsc.w, dsc.h, bg))
                cp, cg = np.stack(cp), np.stack(cg)
                per = suite.cross_frames(cp, cg, src)
                if cross_truth is not None:
                    per.update(suite.image_frames(cp, np.stack(ct)))
                cross_rows += [{"identity": sid, "driver_timestep": k, "camera": s,
                                **{m: v[j] for m, v in per.items()}} for j, (k, s) in enumerate(ck)]
                feats["cross_pred"].append(suite.fid_features(cp))
                keep = _pick(len(cp), cfg.strip_frames)
                fr.update(cross_pred=cp[keep], cross_driver=cg[keep], cross_keys=[ck[j] for j in keep])
            frames[sid] = fr
            del av
            task.advance(info=sid)

    self_fid = suite.fid_of(feats["self_pred"], feats["self_gt"])
    cross_fid = suite.fid_of(feats["cross_pred"], feats["self_gt"])
    protocol = {
        "paper": "AvatarPointillist (CVPR 2026) section 5.3, Tables 1 and 2",
        "config": cfg.to_dict(), "avatar": "given (avatar_fn)" if avatar_fn else "decoder", "decoder_step": meta.get("step"), "points": cfg.points, "animation": mode,
        "background": bg, "seed": cfg.seed, "ar_sampling_seeds": {s: cfg.seed + n for n, s in enumerate(ids)}
        if cfg.points == "generated" else None, **split_rec, "test_identities": ids,
        "seen_in_training": seen_rec,
        "sources": {s: {"timestep": int(k), "timestep_id": str(scenes[s].params.timestep_id[k])
                        if scenes[s].params.timestep_id is not None else str(k),
                        "camera": scenes[s].serials[c]} for s, (k, c) in sources.items()},
        "eval_cameras": serials or "all", "image_size": [scenes[ids[0]].w, scenes[ids[0]].h],
        "driver": driver, "driver_timesteps": [int(k) for k in d_ts], "cross_targets": targets,
        "cross_reference": "ground truth (the target's true Gaussians under the driver's true motion)"
        if cross_truth is not None else None,
        "metrics": suite.names, "skipped_metrics": suite.skipped, "weights": suite.weights,
        "units": {"psnr": "dB", "ssim": "[0, 1]", "lpips": "VGG16 lin", "fid": "Inception pool3, squared units",
                  "akd": "pixels at image_size", "apd": "degrees, mean |d yaw, d pitch, d roll|",
                  "clip": "cosine similarity"},
    }
    return {"protocol": protocol, "self": suite.summarise(self_rows, self_fid),
            "cross": suite.summarise(cross_rows, cross_fid), "_frames": frames}



def run_evaluation(cfg: EvalConfig, asset: FlameAsset, progress: Progress | None = None,
                   label: str = "pointillist", avatar_fn: Callable | None = None,
                   cross_truth: Callable | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`evaluate`, then ``results.json``, ``report.md``, ``pictures/`` and
    ``eval_config.json`` under ``cfg.out`` (what ``pointillist evaluate`` and the demo call)."""
    from .evaluate_report import write_results

    res = evaluate(cfg, asset, progress, avatar_fn, cross_truth)
    files = write_results(res, cfg.out, label)
    cfg.save(Path(cfg.out) / "eval_config.json")
    return res, files


def run_ablation(cfg: EvalConfig, decoders: list[str], asset: FlameAsset,
                 progress: Progress | None = None,
                 cross_truth: Callable | None = None) -> tuple[list[tuple[str, str, dict]], dict[str, str]]:
    """Evaluate decoder checkpoints made with the ablation switches (``train-decoder --inputs
    both|position|feature``, ``--points flame``) under one protocol (same seed, sources and
    driver), each into ``<out>/<configuration>/``; then ``ablation.md`` (paper Table 2 layout)
    and ``ablation.json``. Trains nothing. ``cross_truth``: as :func:`evaluate`'s.

    Raises:
        InputError: no checkpoint, or two checkpoints with the same configuration.
    """
    import dataclasses
    import re

    from .evaluate_report import ablation_label, write_ablation

    if not decoders:
        raise InputError("--decoder", "--ablation needs the decoder checkpoints to compare (repeat --decoder)")
    # every checkpoint is checked before the first is evaluated: a refusal leaves no partial table
    ids, _ = test_identities(cfg.split, TokenStore.open(cfg.store), SupervisionStore.open(cfg.supervision))
    seen: dict[str, str] = {}
    for ckpt in decoders:
        dec, meta = load_decoder(ckpt)
        label = ablation_label(meta, dec.config.inputs)
        if label in seen:
            raise InputError(str(ckpt), f"same ablation configuration ({label}) as {seen[label]}")
        seen_in_training(ids, meta, cfg.ar, cfg.allow_seen, decoder=str(ckpt))
        seen[label] = ckpt
    rows = []
    for label, ckpt in seen.items():
        slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
        sub = dataclasses.replace(cfg, decoder=str(ckpt), out=str(Path(cfg.out) / slug), ar=cfg.ar)
        res, _ = run_evaluation(sub, asset, progress, label, cross_truth=cross_truth)
        rows.append((label, str(ckpt), res, slug))
    return rows, write_ablation(rows, cfg.out)
