"""``claims.png`` of the held-out identities experiment: the claim-(a) NLL curves recorded
during training, then per test identity its portrait, the ground-truth and the generated
canonical clouds (front and side) and the decoder's self-reenactment strip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["claims_png"]


def claims_png(clouds: dict[str, dict[str, np.ndarray]], history: list[dict], strips: dict[str, Path],
               path: str | Path) -> Path:
    """Draw the picture.

    Args:
        clouds: per test subject ``portrait (S, S, 3)`` uint8, ``gt (M, 3)`` and ``generated
            (N, 3)`` canonical points in metres (y up, face towards +z).
        history: ``log.jsonl`` records with ``step`` and ``nll_<split>_<condition>`` fields.
        strips: per subject the ``evaluate`` self-reenactment strip PNG (drawn when it exists).

    Returns:
        ``path``, written atomically.
    """
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointillist_data.pictures import save_figure

    ids = list(clouds)
    ncol = 6
    fig = plt.figure(figsize=(3 * ncol, 2.8 * (len(ids) + 1)), dpi=80)
    ax = fig.add_subplot(len(ids) + 1, 1, 1)
    styles = {"true": "-", "shuffled": "--", "none": ":"}
    for split, colour in (("train", "tab:blue"), ("test", "tab:red")):
        for cond, ls in styles.items():
            pts = [(r["step"], r[f"nll_{split}_{cond}"]) for r in history if f"nll_{split}_{cond}" in r]
            if pts:
                s, v = zip(*pts, strict=True)
                ax.plot(s, v, ls, color=colour, marker="o", ms=3, label=f"{split} windows, {cond} conditioning")
    ax.set(xlabel="AR training step", ylabel="NLL (nats/token)",
           title="claim (a): per-token NLL with the true / a shuffled / no portrait, during training")
    ax.grid(alpha=0.3)
    if history:
        ax.legend(fontsize=7, ncol=2)
    for r, sid in enumerate(ids):
        c = clouds[sid]
        panels = [("portrait", None), ("ground truth, front", (c["gt"], 0)), ("generated, front", (c["generated"], 0)),
                  ("ground truth, side", (c["gt"], 2)), ("generated, side", (c["generated"], 2)), ("strip", None)]
        for k, (title, data) in enumerate(panels):
            a = fig.add_subplot(len(ids) + 1, ncol, ncol * (r + 1) + k + 1)
            a.axis("off")
            if title == "portrait":
                a.imshow(c["portrait"])
                a.set_title(f"{sid}: portrait", fontsize=9)
            elif title == "strip":
                p = strips.get(sid)
                if p is not None and Path(p).is_file():
                    a.imshow(iio.imread(p))
                    a.set_title("self-reenactment (P + F):\nsource | ours | ground truth", fontsize=8)
                else:
                    a.text(0.5, 0.5, "no reenactment strip", ha="center", va="center", fontsize=8)
            else:
                pts, axis = data
                if len(pts):
                    sub = pts[:: max(1, len(pts) // 20000)]
                    a.scatter(sub[:, axis], sub[:, 1], s=0.3 if len(pts) > 2000 else 3, c=sub[:, 2 - axis],
                              cmap="viridis")
                if len(c["gt"]):  # the generated cloud on the ground truth's axes, so the two compare
                    lo, hi = c["gt"].min(0) - 0.02, c["gt"].max(0) + 0.02
                    a.set_xlim(lo[axis], hi[axis])
                    a.set_ylim(lo[1], hi[1])
                a.set_aspect("equal")
                a.set_title(f"{title} ({len(pts)} points)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=None)
