"""``pointillist inspect`` for supervision stores: a summary and a picture of one identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..viz import contact_sheet, save_png
from .supervision import SupervisionStore

__all__ = ["summarize_supervision", "plot_supervision"]


def summarize_supervision(store: SupervisionStore) -> dict[str, Any]:
    """Per identity: timesteps, cameras, crops and the foreground fraction of its first timestep."""
    per = []
    for i, sid in enumerate(store.subject_ids()):
        K, C = (int(x) for x in store.counts[i])
        fg = float(np.mean([store.view(i, 0, c)[1].mean() / 255.0 for c in range(C)]))
        per.append({"subject_id": sid, "timesteps": K, "cameras": C, "foreground": fg,
                    "crops": int(store.crops(i)[0].shape[0])})
    return {"samples": len(store), "views": int((store.counts[:, 0] * store.counts[:, 1]).sum()),
            "image_size": list(store.image_size), "format_version": store.attrs["format_version"], "subjects": per}


def plot_supervision(store: SupervisionStore, out: str | Path, identity: int = 0) -> Path:
    """PNG: every camera of the identity's first and last timesteps (masks tinted), then its crops."""
    K, C = (int(x) for x in store.counts[identity])
    H, W = store.image_size
    tiles, labels = [], []
    for k in sorted({0, K - 1}):
        for c, cam in enumerate(store.cameras(identity)):
            rgb, m = store.view(identity, k, c)
            tint = rgb.astype(np.float32) * (0.55 + 0.45 * m[..., None] / 255.0)
            tiles.append(tint.astype(np.uint8))
            labels.append(f"t{k} {cam.serial[-3:]}")
    crops, src = store.crops(identity)
    for j, crop in enumerate(crops):
        side = min(H, W)
        img = np.zeros((H, W, 3), np.uint8)
        sq = np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR))
        y0, x0 = (H - side) // 2, (W - side) // 2
        img[y0:y0 + side, x0:x0 + side] = sq
        tiles.append(img)
        labels.append(f"crop t{src[j, 0]} c{src[j, 1]}")
    return save_png(contact_sheet(tiles, cols=min(C, 8), labels=labels), out)
