"""The Gaussian decoder: outputs, ablations, AR features, LPIPS, overfitting one identity,
exact resume, and the train-decoder / avatar commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from decoder_world import build_world
from typer.testing import CliRunner

from pointillist_data.errors import InputError
from pointillist_model.ar import PRESETS, ARConfig, PointillistAR
from pointillist_model.decoder import DECODER_PRESETS, DecoderConfig, GaussianDecoder, flame_vertex_binding
from pointillist_model.decoder_train import DecoderTrainConfig, DecoderTrainer
from pointillist_model.features import teacher_forced_hidden
from pointillist_model.generate import sample_points
from pointillist_model.lpips import LPIPS, LpipsWeightsError, load_lpips


def _inputs(B=2, N=300, ar_dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, N, 3, generator=g) * 0.3 - 0.15, torch.randn(B, N, 4, ar_dim, generator=g),
            torch.randn(B, 20, ar_dim, generator=g))


def test_decoder_outputs_shapes_ranges_and_gradients():
    torch.manual_seed(0)
    cfg = DecoderConfig(**{**DECODER_PRESETS["tiny"].to_dict(), "attention_group": 128})
    dec = GaussianDecoder(cfg)
    pts, hid, cond = _inputs()
    out = dec(pts, hid, cond)
    assert out.means.shape == (2, 300, 3) and out.quats.shape == (2, 300, 4) and out.opacity.shape == (2, 300)
    torch.testing.assert_close(out.quats.norm(dim=-1), torch.ones(2, 300))
    assert (out.scales > 0).all() and (out.scales <= cfg.max_scale).all()
    assert (out.opacity >= 0).all() and (out.opacity <= 1).all() and (out.rgb >= 0).all() and (out.rgb <= 1).all()
    assert (out.offsets.abs() <= cfg.max_offset).all()
    torch.testing.assert_close(out.means, pts + out.offsets)
    loss = sum(t.square().sum() for t in out[1:])
    loss.backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # one group as large as the cloud is the paper's full joint attention: the same numbers
    dec.config.attention_group = 300
    a = dec(pts, hid, cond)
    dec.config.attention_group = None
    torch.testing.assert_close(a.means, dec(pts, hid, cond).means)


@pytest.mark.parametrize("inputs", ["position", "feature"])
def test_ablation_inputs(inputs):
    dec = GaussianDecoder(DecoderConfig(**{**DECODER_PRESETS["tiny"].to_dict(), "inputs": inputs}))
    pts, hid, cond = _inputs(B=1, N=50)
    out = dec(pts, None if inputs == "position" else hid, cond)
    assert out.rgb.shape == (1, 50, 3) and dec.needs_features == (inputs == "feature")
    if inputs == "position":  # no AR features: the points alone decide
        moved = dec(pts, hid * 5, cond).rgb
        torch.testing.assert_close(moved, out.rgb)
    with pytest.raises(ValueError, match="hidden states"):
        GaussianDecoder(DECODER_PRESETS["tiny"])(pts, None, cond)
    with pytest.raises(InputError, match="inputs position"):
        DecoderTrainConfig(store="s", supervision="v", ar_checkpoint="a", out="o", points="flame", w_lpips=0)


def test_flame_vertex_binding(demo_asset):
    b = flame_vertex_binding(demo_asset.faces, demo_asset.num_vertices)
    assert (b >= 0).all()
    assert (demo_asset.faces[b] == np.arange(demo_asset.num_vertices)[:, None]).any(1).all()


def test_teacher_forced_hidden_matches_generation():
    torch.manual_seed(1)
    ar = PointillistAR(ARConfig(**{**PRESETS["tiny"].to_dict(), "max_seq_len": 256}))
    g = torch.Generator().manual_seed(2)
    ctx = ar.context(torch.randint(0, 255, (1, 32, 32, 3), generator=g, dtype=torch.uint8),
                     torch.randn(1, 300, 3, generator=g) * 0.1)
    res = sample_points(ar, ctx, max_points=30, greedy=True)
    h = teacher_forced_hidden(ar, res.tokens[0], ctx)
    torch.testing.assert_close(h, res.hidden[0], atol=1e-4, rtol=1e-4)
    # windows slide past max_seq_len: every token keeps >= window - stride tokens of context
    h2 = teacher_forced_hidden(ar, res.tokens[0], ctx, window=64, stride=32)
    torch.testing.assert_close(h2[:60], res.hidden[0][:60], atol=1e-4, rtol=1e-4)
    assert h2.shape == h.shape


def test_lpips_from_local_weights(tmp_path):
    torch.manual_seed(0)
    small = LPIPS(widths=(4, 8, 8, 8, 8))
    x = torch.rand(2, 3, 40, 40)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(small(x, x).abs().max()) < 1e-6 and (small(x, y) > 0).all()
    xr = x.clone().requires_grad_(True)
    small(xr, y).sum().backward()
    assert xr.grad.abs().sum() > 0
    with pytest.raises(LpipsWeightsError, match="not found"):
        load_lpips(tmp_path / "missing.pth")
    # the published layout: torchvision's vgg16 state dict and the lpips package's vgg.pth
    full = LPIPS()
    torch.save({k: v for k, v in full.state_dict().items() if k.startswith("features.")}, tmp_path / "vgg16-x.pth")
    torch.save({f"lin{i}.model.1.weight": m.weight for i, m in enumerate(full.lin)}, tmp_path / "vgg.pth")
    again = load_lpips(tmp_path)
    torch.testing.assert_close(again(x, y), full(x, y))
    torch.save(small.state_dict(), tmp_path / "small.pth")
    with pytest.raises(LpipsWeightsError, match="do not fit"):
        load_lpips(tmp_path / "small.pth")


def test_lpips_weight_without_weights_is_a_clear_error(tmp_path):
    from pipelines.cli import app

    with pytest.raises(InputError, match="--lpips-weights"):
        DecoderTrainConfig(store="s", supervision="v", ar_checkpoint="a", out="o")
    r = CliRunner().invoke(app, ["train-decoder", "--store", str(tmp_path), "--ar-checkpoint", str(tmp_path / "a.pt"),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--lpips-weights" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------------------- one identity
@pytest.fixture(scope="module")
def world(demo_asset, tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("decoder_world"), demo_asset, points=1200)


def _config(world, out, **kw):
    base = dict(store=world["store"], supervision=world["supervision"], ar_checkpoint=world["ar"], out=str(out),
                preset="tiny", w_lpips=0.0, cameras_per_step=2, holdout_serials=[world["holdout"]], lr=3e-3,
                warmup=10, min_lr_ratio=0.05, log_every=20, ckpt_every=10_000, crops=2)
    return DecoderTrainConfig(**{**base, **kw})


def one_line_error(r, *words):
    """A domain error: exit 2, one `error: ...` line naming ``words``, no traceback."""
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert lines[0].startswith("error: ") and len(lines) <= 2, lines
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def trained(world, demo_asset, tmp_path_factory):
    """120 steps of ``pointillist train-decoder`` (the command), and a trainer holding its checkpoint."""
    from pipelines.cli import app

    out = tmp_path_factory.mktemp("decoder_run")
    cfg = _config(world, out, steps=120, log_every=1)
    tr = DecoderTrainer(cfg, demo_asset)
    before = tr.evaluate()["psnr"]
    cfg.save(out / "config.json")
    r = CliRunner().invoke(app, ["train-decoder", "--store", world["store"], "--ar-checkpoint", world["ar"], "--out",
                                 str(out), "--config", str(out / "config.json")])
    assert r.exit_code == 0, r.output
    tr.load(out / "checkpoint.pt")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return tr, log, before, tr.evaluate()["psnr"], out, r.output


def test_tiny_decoder_overfits_one_identity(trained):
    tr, log, before, after, out, output = trained
    print(f"held-out camera PSNR {before:.2f} -> {after:.2f} dB in {len(log)} steps")
    assert after >= 24.0 and after > before + 3
    assert [r["step"] for r in log] == list(range(1, 121))
    assert log[-1]["l1"] < log[0]["l1"] * 0.6
    assert f"held-out PSNR {after:.2f} dB" in output  # the command evaluated the same weights
    # the AR features were cached under the checkpoint's hash, one entry per crop
    assert len(list(tr.cache.dir.glob("901_*.context.npy"))) == 2


@pytest.mark.parametrize("case,named", [
    (["--store", "/no/such/store.zarr", "--w-lpips", "0"], "/no/such/store.zarr"),
    (["--ar-checkpoint", "/no/such/ar.pt", "--w-lpips", "0"], "/no/such/ar.pt"),
])
def test_train_decoder_bad_input_is_one_line(world, tmp_path, case, named):
    from pipelines.cli import app

    args = {"--store": world["store"], "--ar-checkpoint": world["ar"], "--out": str(tmp_path / "o")}
    for k, v in zip(case[::2], case[1::2], strict=True):
        args[k] = v
    r = CliRunner().invoke(app, ["train-decoder", *[x for kv in args.items() for x in kv]])
    one_line_error(r, named)


def test_interrupted_and_resumed_decoder_run_matches(world, demo_asset, tmp_path):
    kw = dict(steps=5, ckpt_every=2, log_every=1, cache_dir=str(tmp_path / "cache"))
    full = DecoderTrainer(_config(world, tmp_path / "full", **kw), demo_asset).train()
    cut = DecoderTrainer(_config(world, tmp_path / "cut", **kw), demo_asset)
    cut.train(steps=2)  # checkpoint at step 2, then "crash"
    resumed = DecoderTrainer(_config(world, tmp_path / "cut", **kw), demo_asset)
    resumed.load(tmp_path / "cut" / "checkpoint.pt")
    rest = resumed.train()
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[2:]]


def test_avatar_command(trained, world, tmp_path):
    from pipelines.cli import app
    from pointillist_data.flame import FlameParams
    from pointillist_data.gaussians import read_ply
    from pointillist_data.viz import save_png

    tr, *_, out, _ = trained
    portrait = save_png(np.asarray(tr.tokens.group["image"][0]), tmp_path / "portrait.png")
    world["params"].save(tmp_path / "motion.npz")
    r = CliRunner().invoke(app, ["avatar", "--image", str(portrait), "--out", str(tmp_path / "avatar"), "--checkpoint",
                                 str(out / "checkpoint.pt"), "--identity", str(tmp_path / "motion.npz"), "--motion",
                                 str(tmp_path / "motion.npz"), "--max-points", "40", "--turntable-frames", "4", "--size", "48"])
    assert r.exit_code == 0, r.output
    # the motion's 100 expression coefficients onto the demo head's: said in one line (was silent)
    assert [ln for ln in r.output.splitlines() if ln.startswith("warning:") and "100 expression" in ln], r.output
    info = json.loads((tmp_path / "avatar" / "avatar.json").read_text())
    # at most 40 points, fewer than degenerate_min_points: one warning line, recorded (issue 30)
    assert [ln for ln in r.output.splitlines() if ln.startswith("warning:") and "degenerate cloud: " in ln], r.output
    assert info["degenerate"].startswith(f"degenerate cloud: {info['points']} points")
    av = tmp_path / "avatar"  # avatar.json names its files relative to its folder (relocatable)
    assert not any(f.startswith("/") for f in info["files"].values()), info["files"]
    g = read_ply(av / info["files"]["ply"], tr.asset.num_faces)
    assert len(g) == info["points"] and 1 <= len(g) <= 40
    fp = FlameParams.load(tmp_path / "avatar" / "flame_param.npz")
    assert fp.num_frames == 3 and fp.dynamic_offset.shape == (3, tr.asset.num_vertices, 3)
    assert fp.expr.shape == (3, 100)  # VHAP / GaussianAvatars layout kept for a smaller head model
    import imageio.v3 as iio

    assert iio.improps(av / info["files"]["turntable_mp4"], plugin="pyav").shape[:3] == (4, 48, 48)
    # driver | avatar side by side (issue 29): the driving FLAME mesh beside the avatar
    assert iio.improps(av / info["files"]["reenactment_mp4"], plugin="pyav").shape[:3] == (3, 48, 96)
    from pictures import open_picture

    open_picture(av / "turntable.png", (4 * 48, 48))
    sheet = open_picture(av / "reenactment.png", (2 * 96, 2 * 48))
    driver, avatar = sheet[2:50, 2:50].astype(float), sheet[2:50, 50:98].astype(float)
    assert driver[14:].std() > 12 and avatar[14:].std() > 12 and np.abs(driver - avatar).mean() > 5
    # progress from the start: the tokens sampled, then every rendered frame
    assert "generating 1 point cloud(s), tokens: started" in r.output, r.output
    assert "reenactment: avatar: done 3/3" in r.output and "turntable: done 4/4" in r.output, r.output
    # bad input: a missing portrait, a file that is no checkpoint
    r = CliRunner().invoke(app, ["avatar", "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "a2"),
                                 "--checkpoint", str(out / "checkpoint.pt")])
    one_line_error(r, "--image", "none.png")
    r = CliRunner().invoke(app, ["avatar", "--image", str(portrait), "--out", str(tmp_path / "a2"), "--checkpoint",
                                 str(portrait)])
    one_line_error(r, "portrait.png", "not a readable checkpoint")


def test_ply_gaussians_are_local_to_their_canonical_faces(trained):
    from pointillist_data.quaternion import quat_to_matrix
    from pointillist_model.avatar import decode_avatar, to_bound_gaussians

    tr = trained[0]
    pts, bind, hid, cond = tr.inputs(0, "901", 0)
    an = tr.animator(0)
    av = decode_avatar(tr.model.eval(), pts, bind, torch.as_tensor(np.asarray(hid)), cond, an, np.zeros(300))
    g = av.gaussians
    back = to_bound_gaussians(av).to_global(an.canonical_frames)  # what GaussianAvatars computes
    torch.testing.assert_close(back["means"], g.means[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(back["scales"], g.scales[0], atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(quat_to_matrix(back["quats"]), quat_to_matrix(g.quats[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(back["opacities"], g.opacity[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(back["rgb"], g.rgb[0], atol=1e-5, rtol=0)


def test_train_decoder_refuses_the_test_split_and_records_what_it_trained_on(world, tmp_path):
    """901 marked ``test`` in the token store: train-decoder trains on no test identity (it
    refuses in one line: there is no other), ``--split all`` says so and trains, and the
    checkpoint records 901 and what the AR checkpoint trained on (nothing: it is untrained)."""
    from pipelines.cli import app
    from pointillist_data.store.supervision_dataset import SupervisionDataset
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter
    from pointillist_model.trainer_base import load_checkpoint

    store = tmp_path / "store.zarr"
    TokenStoreWriter.create(store, StoreConfig(image_size=(32, 32), tokens_per_shard=1 << 15, tokens_per_chunk=1 << 12,
                                               points_per_shard=1 << 13, points_per_chunk=1 << 10)).append(
        [world["sample"]], annotations={"901": {"split": "test"}})
    args = ["train-decoder", "--store", str(store), "--supervision", world["supervision"], "--ar-checkpoint",
            world["ar"], "--out", str(tmp_path / "o"), "--w-lpips", "0", "--steps", "1", "--cameras-per-step", "1"]
    r = CliRunner().invoke(app, args)
    one_line_error(r, "--split", "no sample of split 'train'", "test 1")
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
    r = CliRunner().invoke(app, [*args, "--split", "all"])
    assert r.exit_code == 0, r.output
    assert "--split all" in r.output and "test identities included" in r.output
    s = load_checkpoint(tmp_path / "o" / "checkpoint.pt")
    assert s["subject_ids"] == ["901"] and s["ar_subject_ids"] == [] and s["train_split"] == "all"
    # the supervision dataset selects by the token store's split the same way
    assert len(SupervisionDataset(world["supervision"], split="train", tokens=str(store))) == 0
    ds = SupervisionDataset(world["supervision"], split="test", tokens=str(store))
    assert ds.subject_ids == ["901"] and len(ds) == len(SupervisionDataset(world["supervision"]))


def test_train_decoder_draws_curves_and_heldout_renders(trained, world):
    """Issue 29: the command wrote ``loss_curve.png`` and, at its last step (``render_every``
    defaults to 500, and the end always renders), ``heldout.png`` = ``renders/step_000120.png``:
    per tile prediction | ground truth. The ground-truth half is the stored held-out view, and the
    PSNR measured on the picture's halves is the logged ``heldout_psnr``."""
    from pictures import open_picture

    from pointillist_model.trainer_base import CURVE_NAME, TENSORBOARD_MISSING

    tr, log, _, _, out, output = trained
    open_picture(out / CURVE_NAME, (400, 200))
    sheet = open_picture(out / "heldout.png", (2 * 110, 160))
    assert (out / "renders" / "step_000120.png").read_bytes() == (out / "heldout.png").read_bytes()
    assert "heldout_psnr" in log[-1] and all("heldout_psnr" not in r for r in log[:-1])
    sup = world["supervision_sample"]
    cam = [str(s) for s in sup.serials].index(world["holdout"])
    T, H, W = sup.rgb.shape[0], sup.rgb.shape[2], sup.rgb.shape[3]
    measured = []
    for i, t in enumerate((0, T - 1)):  # tiles in a row of the contact sheet (2-pixel padding)
        x = 2 + i * (2 * W + 2)
        tile = sheet[2:2 + H, x:x + 2 * W].astype(np.float64)
        rows = slice(16, H - 14)  # clear of the header and the label
        gt = sup.rgb[t, cam].astype(np.float64)
        assert np.abs(tile[rows, W:] - gt[rows]).max() <= 1
        measured.append(10 * np.log10(255.0 ** 2 / ((tile[rows, :W] - gt[rows]) ** 2).mean()))
    assert np.mean(measured) == pytest.approx(log[-1]["heldout_psnr"], abs=1.0)
    assert np.std(sheet[2:2 + H, 2:2 + W]) > 12  # the prediction is no blank
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert output.count(TENSORBOARD_MISSING) == 1
    else:
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_render_every_is_validated(world, tmp_path):
    with pytest.raises(InputError, match="--render-every"):
        _config(world, tmp_path, render_every=-1)


def test_reenactment_shows_the_drivers_own_frames_when_given(world, demo_asset, tmp_path):
    """``write_avatar(..., driver_frames=)``: the driver's video frames (here one flat colour per
    frame) stand on the left of each reenactment frame, resized to the avatar's (an untrained
    decoder's avatar: only the driver half is checked)."""
    import imageio.v3 as iio

    from pointillist_model.avatar import decode_avatar, write_avatar
    from pointillist_model.config import AvatarConfig

    tr = DecoderTrainer(_config(world, tmp_path / "dec", steps=1, cache_dir=str(tmp_path / "cache")), demo_asset)
    pts, bind, hid, cond = tr.inputs(0, "901", 0)
    av = decode_avatar(tr.model.eval(), pts, bind, torch.as_tensor(np.array(hid)), cond, tr.animator(0),
                       world["params"].shape)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    driver = np.broadcast_to(colours[:, None, None], (3, 80, 60, 3)).copy()
    cfg = AvatarConfig(size=48, turntable_frames=2)
    files = write_avatar(av, tmp_path / "a", tr.asset, cfg, world["params"], driver_frames=driver)
    frames = iio.imread(files["reenactment_mp4"], plugin="pyav")
    assert frames.shape == (3, 48, 96, 3)
    for t in range(3):  # H.264 keeps a flat colour within a few levels
        assert np.abs(frames[t, 8:40, 8:40].astype(int) - colours[t]).max() <= 12
    with pytest.raises(ValueError, match="2 driver frames for a motion of 3"):
        write_avatar(av, tmp_path / "b", tr.asset, cfg, world["params"], driver_frames=driver[:2])
    assert not (tmp_path / "b").exists()  # refused before anything is written
