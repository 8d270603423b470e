"""The AR model conditioned on a source frame never used in training (issue 30 item 5).

One-shot models are used on pictures they never saw, so a model trained on one fixed portrait
per identity can look better than it is: it may recognise the portrait rather than read the
person. :func:`source_frame_report` scores each identity's stored token sequence (per-token NLL,
teacher-forced over windows as ``train-ar`` cuts them) and optionally generated clouds, once
conditioned on the token store's portrait and once on a *held-out source frame*:

* a checkpoint trained with ``source_images="views"`` records, per trained identity, the
  held-out views it never drew (:meth:`~pointillist_data.store.source_images.SourceImages.record`);
  the first (last held-out timestep, most frontal camera) is used;
* otherwise (a ``portrait`` checkpoint, or an identity it did not train on) the last stored
  timestep at the most frontal camera of the supervision store: ``train-ar`` with portraits
  only ever saw the first frame's portrait.

Both images are prepared by :func:`~pointillist_data.portrait.portrait_crop` at the checkpoint's
portrait side, the FLAME shape is the store's, so the two rows differ only in the picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pointillist_data.errors import InputError
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.portrait import portrait_crop
from pointillist_data.store.loader import window_starts
from pointillist_data.store.supervision import SupervisionStore
from pointillist_data.store.supervision_build import frontal_order
from pointillist_data.store.token_store import TokenStore
from pointillist_data.tokens import QuantBox, decode

from .generate import sample_points
from .portrait import portrait_size
from .train import flame_vertices_for_shapes, load_model
from .trainer_base import load_checkpoint

__all__ = ["heldout_source_view", "heldout_source_images", "sequence_nll", "chamfer_mm", "source_frame_report"]


def heldout_source_view(ck: dict, sup: SupervisionStore, subject: str) -> tuple[int, int, str]:
    """``(timestep, camera, how)`` of ``subject``'s held-out source view in ``sup``: the first
    held-out view the checkpoint ``ck`` records for it, found by its capture frame and camera
    serial (``how="recorded"``), else the last stored timestep at the most frontal camera
    (``how="last timestep"``).

    Raises:
        KeyError: ``subject`` is not in the supervision store.
    """
    rec = (ck.get("source_images") or {}).get("identities", {}).get(subject)
    i = sup.index(subject)
    if rec and rec.get("heldout"):
        # by name (capture frame and camera serial): the indices hold only in the store trained with
        tid, serial = rec["heldout"][0]
        tids = [str(t) for t in sup.params(i).timestep_id]
        serials = [c.serial for c in sup.cameras(i)]
        if tid in tids and serial in serials:
            return tids.index(tid), serials.index(serial), "recorded"
    K = int(sup.counts[i, 0])
    w2c = np.stack([c.world_to_cam for c in sup.cameras(i)])
    return K - 1, int(frontal_order(w2c)[0]), "last timestep"


def heldout_source_images(ck: dict, tokens: TokenStore, sup: SupervisionStore,
                          subjects: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per identity of ``tokens`` (``subjects``, default all), its source frame never used in
    training (:func:`heldout_source_view`) prepared as the AR model's conditioning image.

    Returns:
        ``{subject: {"sample": token-store index, "image": (S, S, 3) uint8 at the checkpoint's
        portrait side, "view": [timestep_id, serial], "how": "recorded" | "last timestep"}}``.

    Raises:
        KeyError: an identity missing from the supervision store.
    """
    size, ids = portrait_size(ck), tokens.subject_ids()
    out = {}
    for sid in (ids if subjects is None else subjects):
        k, c, how = heldout_source_view(ck, sup, sid)
        si = sup.index(sid)
        out[sid] = {"sample": ids.index(sid), "image": portrait_crop(sup.view(si, k, c)[0], size), "how": how,
                    "view": [str(sup.params(si).timestep_id[k]), sup.cameras(si)[c].serial]}
    return out


@torch.no_grad()
def sequence_nll(model, tokens: np.ndarray, context: torch.Tensor, window: int, pad: int) -> tuple[float, int]:
    """Summed next-token NLL (nats) and the number of predicted tokens of one token sequence
    ``tokens (T,)``, teacher-forced in consecutive windows of ``window`` tokens (the
    windows ``train-ar`` cuts with ``stride = window``; the first token of each window is
    context, as in training), all windows conditioned on ``context (1, N, dim)``."""
    dev = context.device
    starts = window_starts(len(tokens), window, window)
    batch = torch.full((len(starts), window), pad, dtype=torch.long)
    mask = torch.zeros((len(starts), window), dtype=torch.bool)
    for j, s in enumerate(starts):
        part = torch.as_tensor(np.asarray(tokens[s:s + window], np.int64))
        batch[j, :len(part)], mask[j, :len(part)] = part, True
    total, count = 0.0, 0
    for j in range(0, len(starts), 8):  # a few windows at a time: memory stays bounded
        tok, m = batch[j:j + 8].to(dev), mask[j:j + 8].to(dev)
        logits = model(tok, context.expand(len(tok), -1, -1))
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tok[:, 1:].reshape(-1),
                             reduction="none")
        total += float((ce * m[:, 1:].reshape(-1)).sum())
        count += int(m[:, 1:].sum())
    return total, count


def chamfer_mm(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> float:
    """Symmetric Chamfer distance (millimetres) between point sets ``a (N, 3)`` and ``b (M, 3)``
    in metres: the mean of the two mean nearest-neighbour distances; ``nan`` when either is empty."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)

    def one_way(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.cat([torch.cdist(x[i:i + chunk], y).min(1).values for i in range(0, len(x), chunk)]).mean())

    return 500.0 * (one_way(ta, tb) + one_way(tb, ta))


def source_frame_report(checkpoint: str | Path | dict, store: str | Path, supervision: str | Path, asset: FlameAsset,
                        subjects: list[str] | None = None, *, window: int | None = None, generate: int = 0,
                        max_points: int = 30000, top_p: float | None = 0.95, seed: int = 0,
                        device: str = "cpu") -> dict[str, Any]:
    """Per-token NLL (and optionally generation) of each identity conditioned on its training
    portrait vs a held-out source frame never used in training (module docstring).

    Args:
        checkpoint: an AR checkpoint (``train-ar``'s ``checkpoint.pt``) or its loaded state.
        store: the token store (tokens, portraits, FLAME shapes).
        supervision: the supervision store the held-out views are read from.
        asset: the FLAME model of the store.
        subjects: identities to score (default: every identity in both stores).
        window: teacher-forcing window in tokens (default: the model's ``max_seq_len``).
        generate: clouds sampled per identity and source (0: NLL only); seeded by
            ``seed`` (nucleus ``top_p``, at most ``max_points`` points).

    Returns:
        ``{"rows": [...], "mean": {...}, "sources": how the held-out views were chosen}``;
        each row: ``subject_id``, ``trained`` (the checkpoint trained on the identity),
        ``heldout_view`` (``[timestep_id, serial]``), ``tokens`` (predicted tokens),
        ``nll_portrait`` and ``nll_heldout`` (nats per token) and, when ``generate``,
        ``points_portrait`` / ``points_heldout`` (mean generated point counts), ``points_true``
        and ``chamfer_portrait_mm`` / ``chamfer_heldout_mm`` (mean Chamfer distance to the
        stored cloud); ``mean`` averages the numeric fields over the rows (per identity).

    Raises:
        InputError: no identity in both stores, or a named one missing from either.
    """
    ck = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, device)
    model = load_model(ck, device).requires_grad_(False)
    tokens, sup = TokenStore.open(store), SupervisionStore.open(supervision)
    both = [s for s in tokens.subject_ids() if s in set(sup.subject_ids())]
    ids = both if subjects is None else [str(s) for s in subjects]
    missing = [s for s in ids if s not in set(both)]
    if missing or not ids:
        raise InputError(str(supervision), f"identities {missing[:5]} are not in both {store} and this store"
                         if missing else "no identity is in both the token and the supervision store")
    size, window = portrait_size(ck), int(window or model.config.max_seq_len)
    trained = set(ck.get("subject_ids") or [])
    box = QuantBox.from_dict(ck["quant_box"])
    rows, how = [], set()
    for n, sid in enumerate(ids):
        ti = tokens.subject_ids().index(sid)
        k, c, h = heldout_source_view(ck, sup, sid)
        how.add(h)
        si = sup.index(sid)
        images = {"portrait": portrait_crop(np.asarray(tokens.group["image"][ti]), size),
                  "heldout": portrait_crop(sup.view(si, k, c)[0], size)}
        verts = flame_vertices_for_shapes(asset, np.asarray(tokens.group["flame_shape"][ti:ti + 1])).to(device)
        seq = tokens.tokens(ti)
        row: dict[str, Any] = {"subject_id": sid, "trained": sid in trained,
                               "heldout_view": [str(sup.params(si).timestep_id[k]), sup.cameras(si)[c].serial]}
        true_pts = tokens.to_points(ti)[0] if generate else None
        for name, img in images.items():
            with torch.no_grad():
                ctx = model.context(torch.as_tensor(img, device=device)[None], verts)
            total, count = sequence_nll(model, seq, ctx, window, tokens.vocab.pad)
            row["tokens"], row[f"nll_{name}"] = count, total / max(count, 1)
            if generate:
                g = torch.Generator(device).manual_seed(seed + n)
                res = sample_points(model, ctx.expand(generate, -1, -1), max_points=max_points, top_p=top_p,
                                    generator=g, return_hidden=False, graph="eager")
                clouds = [decode(t.cpu().numpy(), box, model.config.vocab)[0] for t in res.tokens]
                row[f"points_{name}"] = float(np.mean([len(p) for p in clouds]))
                row[f"chamfer_{name}_mm"] = float(np.nanmean([chamfer_mm(p, true_pts) for p in clouds]))
        if generate:
            row["points_true"] = int(len(true_pts))
        rows.append(row)
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return {"rows": rows, "mean": mean, "sources": sorted(how), "window": window, "portrait_size": size}
