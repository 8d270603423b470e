"""The model part of ``make demo``: brief tiny-model training, one generated point cloud, then
the tiny Gaussian decoder trained briefly on the store and the demo avatar's turntable and
reenactment."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_and_generate(store: str, out: Path, capture: Path, pid: int, sequence: str, steps: int, console) -> dict:
    """Train the tiny preset on ``store`` for ``steps`` and generate from the stored portrait."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.markup import escape

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_data.store.token_store import TokenStore
    from pointillist_model.config import GenerateConfig
    from pointillist_model.portrait import generate_from_portrait
    from pointillist_model.train import TrainConfig, Trainer

    asset = resolve_flame_asset()
    cfg = TrainConfig(store=store, out=str(out), preset="tiny", window=512, stride=256, batch_size=2, steps=steps,
                      lr=1e-3, warmup=20, ckpt_every=10_000, log_every=25)
    with cli_progress(console) as progress:
        log = Trainer(cfg, asset).train(progress=progress)
    console.print(f"      AR model: loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} over {steps} steps "
                  f"({log[-1].get('tokens_per_s', 0):.0f} tokens/s)")
    portrait = np.asarray(TokenStore.open(store).group["image"][0])
    res = generate_from_portrait(out / "checkpoint.pt", portrait, asset, out / "generated",
                                 GenerateConfig(max_points=1500, top_p=0.9))
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
    console.print(f"      generated {res[0]['points']} points ({escape(str(res[0]['shape_source']))}) -> "
                  f"[bold]{res[0]['ply']}[/]; "
                  f"picture [bold]{png}[/]; training curve [bold]{out / 'loss_curve.png'}[/]")
    figures = {"ar_loss_first": round(log[0]["loss"], 4), "ar_loss_last": round(log[-1]["loss"], 4),
               "generated_points": res[0]["points"]}
    sup = str(Path(store).parent / "supervision.zarr")
    if Path(sup).exists():
        figures.update(train_decoder_and_animate(store, sup, out / "checkpoint.pt", out, console))
    return figures


def train_decoder_and_animate(store: str, supervision: str, ar_checkpoint: Path, out: Path, console,
                              steps: int = 16) -> dict:
    """Train the tiny decoder for ``steps`` on the demo stores (camera 8 held out), then write
    the stored identity's avatar: PLY, turntable and a reenactment of its tracked motion.

    The avatar is decoded from the stored (teacher-forced) cloud: a tiny AR model trained for
    a minute does not generate a head, and ``pointillist avatar`` runs the generating path.
    """
    import time

    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.avatar import AvatarConfig, decode_avatar, write_avatar
    from pointillist_model.decoder_train import DecoderTrainConfig, DecoderTrainer

    t0 = time.perf_counter()
    asset = resolve_flame_asset()
    tr = None
    with cli_progress(console) as progress:
        from pointillist_data.store.supervision import SupervisionStore

        held = SupervisionStore.open(supervision).cameras(0)[8].serial  # VHAP's held-out camera
        cfg = DecoderTrainConfig(store=store, supervision=supervision, ar_checkpoint=str(ar_checkpoint),
                                 out=str(out / "decoder"), preset="tiny", steps=steps, w_lpips=0.0, lr=3e-3, warmup=4,
                                 cameras_per_step=1, render_scale=0.5, holdout_serials=[held], window=512,
                                 stride=512, model={"attention_group": 512}, log_every=8, ckpt_every=10_000)
        tr = DecoderTrainer(cfg, asset, progress)
        log = tr.train(progress=progress)
        ev = tr.evaluate()
        ti, sid = tr.identities[0]
        si = tr.sup.index(sid)
        pts, bind, hid, cond = tr.inputs(ti, sid, 0)
        shape = tr.views.params(si).shape
        av = decode_avatar(tr.model.eval(), pts, bind, None if hid is None else torch_tensor(hid), cond,
                           tr.animator(si), shape)
        files = write_avatar(av, out / "avatar", asset, AvatarConfig(size=128, turntable_frames=24, fps=12),
                             tr.views.params(si), cfg.animation, progress)
    console.print(f"decoder: loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} over {steps} steps, held-out camera "
                  f"PSNR {ev['psnr']:.2f} dB ({time.perf_counter() - t0:.0f} s), pictures [bold]{out / 'decoder'}"
                  f"/loss_curve.png[/] and [bold]heldout.png[/]; avatar: [bold]{files['ply']}[/], "
                  f"[bold]{files['turntable_mp4']}[/], [bold]{files['reenactment_png']}[/] (driver | avatar)")
    return {"decoder_loss_first": round(log[0]["loss"], 4), "decoder_loss_last": round(log[-1]["loss"], 4),
            "decoder_heldout_psnr_db": round(ev["psnr"], 2), "avatar_gaussians": int(len(pts)),
            "decoder_wall_s": round(time.perf_counter() - t0, 1)}


def torch_tensor(a):
    import torch

    return torch.as_tensor(np.array(a))  # a copy: the cache memory-maps its arrays read-only
