"""The measurements behind the paper's claims, on held-out synthetic identities (issue 30).

* claim (a), the AR model uses the portrait: per-token negative log-likelihood of token
  windows with the true conditioning (the identity's portrait and FLAME shape), a shuffled one
  (another identity's portrait and shape) and none (a black portrait and the mean shape),
  on train and test windows (:class:`NLLProbe`); :class:`ProbedTrainer` records the probe
  during training through the trainer's snapshot hook.
* claims (a, b), generated clouds against the ground truth in the canonical FLAME frame:
  symmetric Chamfer distance in mm (:func:`chamfer_mm`), binding agreement
  (:func:`binding_agreement`: the generated point's face equals or shares a vertex with the
  face of the nearest ground-truth point) and the Pearson correlation of point counts
  (:func:`pearson`), against the training medoid cloud (:func:`medoid_index`) and the FLAME
  vertices (:func:`flame_vertex_cloud`).

Source: AvatarPointillist (CVPR 2026) sections 3-5; the Chamfer distance as in point-cloud
generation work (mean nearest-neighbour distance, both directions, averaged).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pointillist_data.store.loader import TokenWindowDataset
from pointillist_data.store.token_store import TokenStore

from .ar import next_token_loss
from .train import Trainer

__all__ = ["CONDITIONS", "NLLProbe", "ProbedTrainer", "chamfer_mm", "binding_agreement", "pearson",
           "paired_gap", "medoid_index", "flame_vertex_cloud", "cloud_figures"]

#: The conditionings the NLL probe compares.
CONDITIONS = ("true", "shuffled", "none")


def partner(i: int, n: int) -> int:
    """The identity whose conditioning stands in for sample ``i`` of ``n`` in the shuffled
    condition: the next sample in store order (never ``i`` itself when ``n >= 2``)."""
    return (i + 1) % n


class NLLProbe:
    """Per-token NLL (nats) of fixed token windows under the three :data:`CONDITIONS`.

    Args:
        store: the token store (its ``split`` column names train and test samples).
        flame_vertices: ``(S, V, 3)`` float32 neutral FLAME vertices of every store sample
            (:func:`pointillist_model.train.flame_vertices_for_shapes` of its shapes), metres.
        mean_vertices: ``(V, 3)`` the mean-shape (template) vertices, the "none" condition's.
        window: tokens per window (a multiple of 4).
        windows_per_sample: the first this many windows (stride ``window``) of each sample.
        splits: the splits scored (samples of other splits are skipped).
        images: ``{sample: (S, S, 3) uint8}`` the conditioning image of every store sample
            (``true``: the window's own, ``shuffled``: its :func:`partner`'s), e.g. a source
            frame never used in training (:func:`~pointillist_model.source_eval.heldout_source_images`);
            default the store's portraits. With ``train-ar --source-images views`` the store's
            portrait is the identity's first frame at its most frontal camera, one of the
            views training draws from.

    Attributes:
        rows: ``{split: [(sample, start), ...]}`` the windows scored.

    Raises:
        ValueError: the store holds fewer than two samples (no other identity to shuffle in),
            or ``images`` misses a store sample.
    """

    def __init__(self, store: TokenStore, flame_vertices: torch.Tensor, mean_vertices: torch.Tensor, window: int,
                 windows_per_sample: int, splits: Sequence[str] = ("train", "test"),
                 images: Mapping[int, np.ndarray] | None = None) -> None:
        if len(store) < 2:
            raise ValueError("the NLL probe needs two or more identities (one to shuffle in)")
        missing = [] if images is None else sorted(set(range(len(store))) - set(images))
        if missing:
            raise ValueError(f"the NLL probe's images miss store samples {missing[:5]}")
        self.images = images
        self.store, self.fv, self.mean_v = store, flame_vertices, mean_vertices
        self.rows: dict[str, list[tuple[int, int]]] = {}
        self._ds: dict[str, TokenWindowDataset] = {}
        for split in splits:
            try:
                ds = TokenWindowDataset(store, window=window, stride=window, shuffle=False, with_conditioning=True,
                                        split=split, token_cache="none")
            except Exception:  # noqa: BLE001 - a split the store does not hold: nothing to score
                continue
            keep, per = [], {}
            for r, (s, _) in enumerate(ds.windows.tolist()):
                per[s] = per.get(s, 0) + 1
                if per[s] <= windows_per_sample:
                    keep.append(r)
            if keep:
                self._ds[split] = ds
                self.rows[split] = [(int(ds.windows[r, 0]), int(ds.windows[r, 1])) for r in keep]
                self._ds[split].keep = keep  # type: ignore[attr-defined]

    @torch.no_grad()
    def window_nll(self, model, split: str, batch: int = 8) -> dict[str, np.ndarray]:
        """``{condition: (W,) float64}`` per-token NLL of each window of ``split`` (nats/token)."""
        ds = self._ds[split]
        items = [ds.window_item(r) for r in ds.keep]  # type: ignore[attr-defined]
        dev = next(model.parameters()).device
        n = len(self.store)
        images = {}
        out: dict[str, list[float]] = {c: [] for c in CONDITIONS}
        for b0 in range(0, len(items), batch):
            chunk = items[b0:b0 + batch]
            tok = torch.stack([it["tokens"] for it in chunk]).to(dev)
            mask = torch.stack([it["loss_mask"] for it in chunk]).to(dev)
            idx = [int(it["sample"]) for it in chunk]
            for j in idx + [partner(i, n) for i in idx]:
                if j not in images:
                    images[j] = torch.from_numpy(np.asarray(self.store.group["image"][j] if self.images is None
                                                            else self.images[j]))
            img_true = torch.stack([images[i] for i in idx]).to(dev)
            img_other = torch.stack([images[partner(i, n)] for i in idx]).to(dev)
            fv = self.fv.to(dev)
            conds = {"true": (img_true, fv[idx]),
                     "shuffled": (img_other, fv[[partner(i, n) for i in idx]]),
                     "none": (torch.zeros_like(img_true), self.mean_v.to(dev)[None].expand(len(idx), -1, -1))}
            for c, (im, v) in conds.items():
                logits = model(tok, model.context(im, v))
                for k in range(len(idx)):
                    out[c].append(float(next_token_loss(logits[k:k + 1], tok[k:k + 1], mask[k:k + 1])))
        return {c: np.asarray(v, dtype=np.float64) for c, v in out.items()}

    def __call__(self, model) -> dict[str, dict[str, np.ndarray]]:
        """``{split: {condition: (W,) NLL}}`` for every split with windows; ``model`` is put in
        eval mode for the probe and back into its previous mode after."""
        was = model.training
        model.eval()
        try:
            return {s: self.window_nll(model, s) for s in self.rows}
        finally:
            model.train(was)


def flat_nll(res: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """``{"nll_<split>_<condition>": mean}``: the probe's figures as log-record fields."""
    return {f"nll_{s}_{c}": float(v.mean()) for s, per in res.items() for c, v in per.items()}


class ProbedTrainer(Trainer):
    """The AR :class:`~pointillist_model.train.Trainer` with the claim-(a) probe in its
    snapshot hook (:meth:`BaseTrainer.snapshot`): every ``probe_every`` steps and at the end
    the mean NLL of each split and condition joins that step's ``log.jsonl`` record
    (``nll_test_true`` ...). The probe reads fixed windows and draws nothing random, so a
    resumed run still matches an uninterrupted one.

    Args:
        cfg, asset: as :class:`Trainer`.
        windows_per_sample: the probe's windows per identity.
        probe_every: steps between probes (0: only at the end).
    """

    def __init__(self, cfg, asset, windows_per_sample: int = 4, probe_every: int = 0) -> None:
        super().__init__(cfg, asset)
        mean_v = torch.as_tensor(np.asarray(asset.v_template), dtype=torch.float32)
        self.probe = NLLProbe(self.store, self.flame_vertices, mean_v, self.dataset.window, windows_per_sample)
        self.probe_every = probe_every

    def snapshot_every(self) -> int:
        return self.probe_every or self.cfg.steps

    def snapshot(self) -> dict[str, float]:
        return flat_nll(self.probe(self.model))


def paired_gap(worse: np.ndarray, better: np.ndarray) -> dict[str, float]:
    """Mean and standard error of the paired differences ``worse - better`` (e.g. shuffled NLL
    minus true NLL over the same windows); ``holds``: mean > 2 standard errors (windows of one
    identity are correlated, so this overstates the evidence rather than understates it).

    Raises:
        ValueError: arrays of different lengths or fewer than two pairs.
    """
    d = np.asarray(worse, np.float64) - np.asarray(better, np.float64)
    if d.shape != np.shape(better) or len(d) < 2:
        raise ValueError(f"paired_gap needs two or more pairs of equal length, got {np.shape(worse)}, {np.shape(better)}")
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    return {"mean": float(d.mean()), "se": se, "n": int(len(d)), "holds": bool(d.mean() > 2 * se)}


def chamfer_mm(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance in millimetres between point sets ``a (N, 3)`` and
    ``b (M, 3)`` in metres: the mean distance from each point of ``a`` to its nearest point of
    ``b`` and from each of ``b`` to ``a``, averaged.

    Raises:
        ValueError: an empty set.
    """
    from scipy.spatial import cKDTree

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(a) or not len(b):
        raise ValueError("chamfer_mm: empty point set")
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float(0.5 * (da.mean() + db.mean()) * 1e3)


def binding_agreement(points: np.ndarray, binding: np.ndarray, gt_points: np.ndarray, gt_binding: np.ndarray,
                      faces: np.ndarray) -> float:
    """Fraction of ``points (N, 3)`` whose bound face ``binding (N,)`` equals, or shares a mesh
    vertex with, the face of the nearest ground-truth point (``gt_points (M, 3)``,
    ``gt_binding (M,)``); ``faces (F, 3)`` the FLAME triangles.

    Raises:
        ValueError: an empty set.
    """
    from scipy.spatial import cKDTree

    if not len(points) or not len(gt_points):
        raise ValueError("binding_agreement: empty point set")
    _, j = cKDTree(np.asarray(gt_points, np.float64)).query(np.asarray(points, np.float64))
    fa, fb = np.asarray(faces)[np.asarray(binding, np.int64)], np.asarray(faces)[np.asarray(gt_binding, np.int64)[j]]
    share = (fa[:, :, None] == fb[:, None, :]).any(axis=(1, 2))  # the same face shares all three
    return float(share.mean())


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of two equally long sequences; ``None`` when it is undefined (fewer
    than three pairs, or a constant sequence)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"pearson: lengths differ ({len(x)} vs {len(y)})")
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def medoid_index(clouds: Sequence[np.ndarray], max_points: int = 4000, seed: int = 0) -> int:
    """Index of the cloud with the smallest mean :func:`chamfer_mm` to the others (each
    subsampled to ``max_points`` with a seeded generator): the "training-mean cloud" baseline
    as one real identity's cloud rather than an average that is no head."""
    if len(clouds) == 1:
        return 0
    rng = np.random.default_rng(seed)
    sub = [c[rng.choice(len(c), max_points, replace=False)] if len(c) > max_points else c for c in clouds]
    cost = [np.mean([chamfer_mm(a, b) for j, b in enumerate(sub) if j != i]) for i, a in enumerate(sub)]
    return int(np.argmin(cost))


def flame_vertex_cloud(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FLAME-vertex baseline: ``(vertices (V, 3), binding (V,))``, each vertex bound to the
    first face (lowest index) that uses it; a vertex no face uses is dropped."""
    faces = np.asarray(faces, np.int64)
    first = np.full(len(vertices), len(faces), np.int64)
    for k in range(3):
        np.minimum.at(first, faces[:, k], np.arange(len(faces)))
    keep = first < len(faces)
    return np.asarray(vertices)[keep], first[keep]


def cloud_figures(points: np.ndarray, binding: np.ndarray, gt_points: np.ndarray, gt_binding: np.ndarray,
                  faces: np.ndarray) -> dict[str, float]:
    """``chamfer_mm``, ``binding_agreement`` and ``points`` of one cloud against its ground truth."""
    return {"chamfer_mm": chamfer_mm(points, gt_points),
            "binding_agreement": binding_agreement(points, binding, gt_points, gt_binding, faces),
            "points": int(len(points))}
