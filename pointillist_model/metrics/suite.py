"""The metric set of an evaluation run: which metrics, their networks, per-frame values and
per-identity / overall summaries (used by :mod:`pointillist_model.evaluate`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from pointillist_data.errors import InputError
from pointillist_data.flame.asset import FlameAsset

from . import MetricUnavailableError, MetricWeightsError

__all__ = ["MetricSuite", "METRICS", "LOWER_IS_BETTER"]

METRICS = ("psnr", "ssim", "lpips", "fid", "akd", "apd", "clip")
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "lpips": True, "fid": True, "akd": True, "apd": True, "clip": False}
_FRAME_METRICS = ("psnr", "ssim", "lpips", "akd", "apd", "clip")


def _sha(path: str) -> str:
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class MetricSuite:
    """Loads what the chosen metrics need, once.

    Args:
        names: metric names (:data:`METRICS`), or ``None`` for the default set: PSNR, SSIM,
            AKD and APD when MediaPipe is installed, and each network metric whose weights are given.
        lpips_weights, inception_weights, clip_weights: local weight paths.
        asset: the FLAME asset (APD's canonical landmarks).

    Raises:
        InputError: an unknown metric name. MetricWeightsError: a requested network metric without
        (fitting) weights. MetricUnavailableError: AKD / APD requested without MediaPipe.
    """

    def __init__(self, names: list[str] | None, lpips_weights: str | None, inception_weights: str | None,
                 clip_weights: str | None, asset: FlameAsset, device: str = "cpu") -> None:
        auto = names is None
        weights = {"lpips": lpips_weights, "fid": inception_weights, "clip": clip_weights}
        if auto:
            names = ["psnr", "ssim", "akd", "apd"] + [m for m, w in weights.items() if w]
        bad = [m for m in names if m not in METRICS]
        if bad:
            raise InputError("--metrics", f"unknown metric(s) {bad}; known: {', '.join(METRICS)}")
        self.asset, self.skipped, self.weights = asset, {}, {}
        if auto:
            opt = {"lpips": "--lpips-weights", "fid": "--inception-weights", "clip": "--clip-weights"}
            self.skipped.update({m: f"no {opt[m]} given" for m, w in weights.items() if not w})
        self.lpips = self.inception = self.clip = self.mesh = None
        if "lpips" in names:
            from ..lpips import load_lpips

            if not lpips_weights:
                raise MetricWeightsError("--lpips-weights: LPIPS needs local VGG16 LPIPS weights (torchvision's "
                                         "vgg16-*.pth + the lpips package's vgg.pth, or one state dict)")
            self.lpips = load_lpips(lpips_weights, device)
        if "fid" in names:
            from .inception import load_inception

            self.inception = load_inception(inception_weights, device)
        if "clip" in names:
            from .clip import load_clip

            self.clip = load_clip(clip_weights, device)
        if "akd" in names or "apd" in names:
            from .face import FaceMesh

            try:
                self.mesh = FaceMesh()
            except MetricUnavailableError as e:
                if not auto:
                    raise
                self.skipped.update({"akd": str(e), "apd": str(e)})
                names = [m for m in names if m not in ("akd", "apd")]
        self.names = [m for m in METRICS if m in names]
        self.weights = {m: {"path": str(w), "sha256_16": _sha(w)} for m, w in weights.items() if w and m in self.names}

    def _faces(self, pred: np.ndarray, ref: np.ndarray, out: dict) -> None:
        from .face import canonical_landmarks, keypoint_distances, pose_distances, pose_from_landmarks

        if self.mesh is None:
            return
        lp, lr = self.mesh.detect_all(pred), self.mesh.detect_all(ref)
        if "akd" in self.names:
            out["akd"] = keypoint_distances(lp, lr)
        if "apd" in self.names:
            idx, pts = canonical_landmarks(self.asset)

            def pose(lm):
                return np.full(3, np.nan) if lm is None else pose_from_landmarks(lm, idx, pts)

            out["apd"] = pose_distances(np.stack([pose(a) for a in lp]), np.stack([pose(b) for b in lr]))

    def self_frames(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
        """Per-frame PSNR, SSIM, LPIPS, AKD, APD (those chosen) of renders and captured views
        ``(B, H, W, 3)`` uint8; NaN where a face was not found."""
        out: dict[str, np.ndarray] = dict(self.image_frames(pred, gt))
        self._faces(pred, gt, out)
        return {k: [float(x) for x in v] for k, v in out.items()}

    def image_frames(self, pred: np.ndarray, ref: np.ndarray) -> dict[str, list[float]]:
        """Per-frame PSNR, SSIM and LPIPS (those chosen) of renders against reference images
        ``(B, H, W, 3)`` uint8 (captured views, or a synthetic capture's ground-truth renders)."""
        from .image import lpips, psnr, ssim

        out: dict[str, np.ndarray] = {}
        if "psnr" in self.names:
            out["psnr"] = psnr(pred, ref).numpy()
        if "ssim" in self.names:
            out["ssim"] = ssim(pred, ref).numpy()
        if self.lpips is not None:
            out["lpips"] = lpips(self.lpips, pred, ref).numpy()
        return {k: [float(x) for x in v] for k, v in out.items()}

    def cross_frames(self, pred: np.ndarray, driver: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
        """Per-frame CLIP identity score (against ``source``) and AKD / APD against the driver's views."""
        from .clip import clip_identity_score

        out: dict[str, np.ndarray] = {}
        if self.clip is not None:
            out["clip"] = clip_identity_score(self.clip, source, pred).numpy()
        self._faces(pred, driver, out)
        return {k: [float(x) for x in v] for k, v in out.items()}

    def fid_features(self, images: np.ndarray) -> np.ndarray | None:
        """Inception pool features ``(B, 2048)`` of ``images`` (``None`` when FID is not chosen)."""
        from .fid import features

        return None if self.inception is None else features(self.inception, images)

    def fid_of(self, feats_a: list, feats_b: list) -> float | None:
        """FID of two lists of feature blocks (``None`` when FID is not chosen, NaN with fewer
        than 2 images on a side)."""
        from .fid import fid_from_features

        if self.inception is None:
            return None
        a = np.concatenate([f for f in feats_a if f is not None]) if feats_a else np.zeros((0, 1))
        b = np.concatenate([f for f in feats_b if f is not None]) if feats_b else np.zeros((0, 1))
        if len(a) < 2 or len(b) < 2:
            return float("nan")
        return fid_from_features(a, b)

    def summarise(self, rows: list[dict[str, Any]], fid: float | None) -> dict[str, Any]:
        """Per-identity means (NaN-aware) and their mean over identities; FID over all frames;
        ``faces_found``: frames where AKD could be measured."""
        per: dict[str, dict[str, Any]] = {}
        for sid in dict.fromkeys(r["identity"] for r in rows):
            rs = [r for r in rows if r["identity"] == sid]
            d: dict[str, Any] = {"frames": len(rs)}
            for m in _FRAME_METRICS:
                v = np.array([r[m] for r in rs if m in r], np.float64)
                if len(v):
                    d[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                    if m == "akd":
                        d["faces_found"] = int(np.isfinite(v).sum())
            per[sid] = d
        summary: dict[str, Any] = {}
        for m in _FRAME_METRICS:
            v = np.array([d[m] for d in per.values() if m in d], np.float64)
            if len(v):
                summary[m] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        if fid is not None:
            summary["fid"] = fid
        summary["frames"] = len(rows)
        if any("akd" in r for r in rows):
            summary["faces_found"] = int(sum(np.isfinite(r["akd"]) for r in rows if "akd" in r))
        return {"summary": summary, "per_identity": per, "frames": rows}
