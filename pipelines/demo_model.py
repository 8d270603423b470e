"""The model part of ``make demo``: brief tiny-model training and one generated point cloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_and_generate(store: str, out: Path, capture: Path, pid: int, sequence: str, steps: int, console) -> dict:
    """Train the tiny preset on ``store`` for ``steps`` and generate from the stored portrait."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_data.store import TokenStore
    from pointillist_model.portrait import generate_from_portrait
    from pointillist_model.train import TrainConfig, Trainer

    asset = resolve_flame_asset()
    cfg = TrainConfig(store=store, out=str(out), preset="tiny", window=512, stride=256, batch_size=2, steps=steps,
                      lr=1e-3, warmup=20, ckpt_every=10_000, log_every=25)
    with cli_progress(console) as progress, progress.task("training the tiny AR model", total=steps) as task:
        log = Trainer(cfg, asset).train(progress=lambda r: task.update(completed=r["step"],
                                                                       info=f"loss {r['loss']:.3f}"))
    console.print(f"      AR model: loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} over {steps} steps "
                  f"({log[-1].get('tokens_per_s', 0):.0f} tokens/s)")
    portrait = np.asarray(TokenStore.open(store).group["image"][0])
    res = generate_from_portrait(out / "checkpoint.pt", portrait, asset, out / "generated", max_points=1500,
                                 top_p=0.9)
    from plyfile import PlyData

    v = PlyData.read(res[0]["ply"])["vertex"].data
    fig, ax = plt.subplots(1, 3, figsize=(12, 4))
    ax[0].imshow(portrait)
    ax[0].set_title("portrait")
    ax[1].scatter(v["x"], v["y"], s=1, c=v["binding_0"], cmap="hsv")
    ax[1].set_title(f"generated: {len(v)} points (front)")
    ax[2].scatter(v["z"], v["y"], s=1, c=v["binding_0"], cmap="hsv")
    ax[2].set_title("side")
    for a in ax:
        a.set_aspect("equal")
        a.axis("off")
    png = out / "generated.png"
    fig.savefig(png, dpi=80)
    plt.close(fig)
    console.print(f"      generated {res[0]['points']} points ({res[0]['shape_source']}) -> [bold]{res[0]['ply']}[/]; "
                  f"picture [bold]{png}[/]")
    return {"ar_loss_first": round(log[0]["loss"], 4), "ar_loss_last": round(log[-1]["loss"], 4),
            "generated_points": res[0]["points"]}
