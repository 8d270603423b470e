"""``pointillist inspect``: a summary of a token store and a picture of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..pictures import hist_or_values, save_figure  # noqa: E402
from .token_store import TokenStore  # noqa: E402

__all__ = ["summarize_store", "plot_store", "sample_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("index", "subject_id", "split", "points", "tokens", "psnr", "ssim", "landmark_px", "landmark_iod_pct",
                 "vertex_mm", "gaussians", "empty_faces", "faces_used", "max_per_face")


def sample_table(store: TokenStore, where: str | None = None, sort: str | None = None) -> list[dict[str, Any]]:
    """Per-sample rows holding every field of :data:`pointillist_data.store.query.FILTER_FIELDS`
    (the manifest's quality figures and the binding counts; :data:`TABLE_COLUMNS` are the ones
    the table prints), filtered by ``where`` (``"psnr >= 28 and split == train"``: the
    language and fields of ``SampleDataset(where=)`` and the window datasets) and sorted by
    ``sort`` (``psnr``, ``-psnr`` descending).

    Raises:
        InputError: a bad expression or an unknown field (``--where`` / ``--sort``).
    """
    from .query import select_samples

    return select_samples(store, where=where, option="--where", sort=sort, need_all=True)


def summarize_store(store: TokenStore) -> dict[str, Any]:
    """Counts per subject and overall (points, tokens, faces used, points per face)."""
    ids = store.subject_ids()
    entries = store.manifest.extra.get("samples", [])
    per = []
    for i, sid in enumerate(ids):
        n = int(store.point_count[i])
        b = np.asarray(store.group["binding"][int(store.point_offsets[i]): int(store.point_offsets[i]) + n])
        counts = np.bincount(b, minlength=store.vocab.num_faces)
        per.append({"subject_id": sid, "points": n, "tokens": 4 * n + 8, "faces_used": int((counts > 0).sum()),
                    "max_per_face": int(counts.max()) if n else 0,
                    "sequences": entries[i].get("sequences", []) if i < len(entries) else []})
    return {"samples": len(ids), "points_total": int(store.point_count.sum()),
            "tokens_total": int((4 * store.point_count + 8).sum()), "vocabulary": store.vocab.size,
            "quant_box": store.box.to_dict(), "format_version": store.attrs["format_version"], "subjects": per}


def plot_store(store: TokenStore, out: str | Path, sample: int = 0) -> Path:
    """PNG: sample ``sample``'s decoded point cloud coloured by binding (front and side
    views, axes in metres in the canonical FLAME frame: y up, face towards +z), and
    histograms of points per subject (the counts themselves, as text, below
    :data:`~pointillist_data.pictures.FEW_SAMPLES` subjects) and points per face.

    Raises:
        IndexError: ``sample`` is out of range.
    """
    pts, bind = store.to_points(sample)
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.2))
    cmap = plt.get_cmap("hsv")
    col = cmap((bind * 7919 % store.vocab.num_faces) / store.vocab.num_faces)
    ax[0].scatter(pts[:, 0], pts[:, 1], s=0.3, c=col)
    ax[0].set_title(f"sample {sample} ({store.subject_ids()[sample]}): front, by binding")
    ax[0].set_xlabel("x (m)")
    ax[1].scatter(pts[:, 2], pts[:, 1], s=0.3, c=col)
    ax[1].set_title("side")
    ax[1].set_xlabel("z (m), face towards +z")
    for a in ax[:2]:
        a.set_aspect("equal")
        a.set_ylabel("y (m), up")
        a.grid(True, lw=0.3, alpha=0.5)
    # fewer than FEW_SAMPLES subjects: their counts as text, not a histogram spanning value +/- 0.5
    hist_or_values(ax[2], store.point_count, "points per subject", labels=store.subject_ids(), fmt="{:.0f}")
    counts = np.bincount(bind, minlength=store.vocab.num_faces)
    ax[3].hist(counts, bins=np.arange(counts.max() + 2) - 0.5)
    ax[3].set_title("points per face (this subject)")
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)
