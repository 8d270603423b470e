"""One conditioning portrait for every caller: colour layouts converted against references
written here, the centred square against PIL directly, and the same picture giving the same AR
conditioning input and context through ``generate-points``, ``avatar`` and ``evaluate``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from decoder_world import build_world
from PIL import Image
from typer.testing import CliRunner

from pointillist_data.portrait import portrait_crop, to_rgb_uint8


def test_to_rgb_uint8_against_per_pixel_references():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    assert np.array_equal(to_rgb_uint8(grey), np.stack([grey] * 3, -1))
    assert np.array_equal(to_rgb_uint8(grey[..., None]), np.stack([grey] * 3, -1))
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    out = to_rgb_uint8(rgba)
    for y, x in [(0, 0), (2, 3), (4, 6)]:  # straight alpha over a white backdrop, pixel by pixel
        a = rgba[y, x, 3] / 255.0
        ref = [round(rgba[y, x, c] / 255.0 * a * 255 + 255 * (1 - a)) for c in range(3)]
        assert list(out[y, x]) == ref
    ga = np.stack([grey, np.zeros_like(grey)], -1)  # fully transparent: the backdrop
    assert (to_rgb_uint8(ga) == 255).all() and (to_rgb_uint8(ga, background=0) == 0).all()
    u16 = (grey.astype(np.uint16) * 257)[..., None].repeat(3, -1)  # 16-bit PNG of the same picture
    assert np.array_equal(to_rgb_uint8(u16), np.stack([grey] * 3, -1))
    assert np.array_equal(to_rgb_uint8(grey.astype(np.float32) / 255.0), np.stack([grey] * 3, -1))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 4, 4, 3), np.uint8))


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (41, 41), (33, 64)])
def test_portrait_crop_is_the_centred_square_resized(shape):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    h, w = shape
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    ref = np.asarray(Image.fromarray(img[y0:y0 + s, x0:x0 + s]).resize((24, 24), Image.BILINEAR))
    assert np.array_equal(portrait_crop(img, 24), ref)
    assert np.array_equal(portrait_crop(img, s), img[y0:y0 + s, x0:x0 + s])  # already that size: unchanged
    # grey is the same picture as its RGB copy
    assert np.array_equal(portrait_crop(img[..., 1], 24), portrait_crop(np.repeat(img[..., 1:2], 3, -1), 24))


@pytest.fixture(scope="module")
def world(demo_asset, tmp_path_factory):
    """One synthetic identity with a tiny AR model (trained portraits of 32 px) and a decoder
    trained for one step."""
    from pointillist_model.decoder_train import DecoderTrainConfig, DecoderTrainer
    from pointillist_model.trainer_base import load_checkpoint

    root = tmp_path_factory.mktemp("portrait_world")
    w = build_world(root, demo_asset, points=300, timesteps=2, seed=5)
    ck = load_checkpoint(w["ar"])
    ck["portrait_size"] = 32  # as train-ar records it from the store's 32 px portraits
    torch.save(ck, w["ar"])
    DecoderTrainer(DecoderTrainConfig(out=str(root / "dec"), store=w["store"], supervision=w["supervision"],
                                      ar_checkpoint=w["ar"], preset="tiny", w_lpips=0.0, steps=1, cameras_per_step=1,
                                      holdout_serials=[w["holdout"]], log_every=1, ckpt_every=10_000,
                                      cache_dir=str(root / "cache")), demo_asset).train()
    return {**w, "decoder": str(root / "dec" / "checkpoint.pt"), "root": root}


@pytest.fixture
def context_spy(monkeypatch):
    """Records every (conditioning image, context) pair the AR model computes."""
    from pointillist_model.ar import PointillistAR

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = PointillistAR.context

    def spy(self, images, flame_vertices):
        ctx = original(self, images, flame_vertices)
        calls.append((images[:1].detach().clone(), ctx[:1].detach().clone()))
        return ctx

    monkeypatch.setattr(PointillistAR, "context", spy)
    return calls


def _pictures(rng) -> dict[str, np.ndarray]:
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)  # rectangular, landscape
    alpha = rng.integers(0, 256, (45, 70, 1), dtype=np.uint8)
    return {"rectangular": rgb, "greyscale": rgb[..., 0], "rgba": np.concatenate([rgb, alpha], -1)}


@pytest.mark.parametrize("kind", ["rectangular", "greyscale", "rgba"])
def test_generate_points_and_avatar_condition_on_the_same_portrait(world, tmp_path, context_spy, kind):
    from pipelines.cli import app

    img = _pictures(np.random.default_rng(2))[kind]
    path = tmp_path / f"{kind}.png"
    Image.fromarray(img).save(path)
    expected = portrait_crop(img, 32)  # the trained portraits' side, grey and alpha converted
    run = CliRunner()
    with pytest.warns(UserWarning, match="single-image FLAME fit failed"):  # no face: the mean shape for both
        r = run.invoke(app, ["generate-points", "--image", str(path), "--checkpoint", world["ar"],
                             "--out", str(tmp_path / "gen"), "--max-points", "3", "--graph", "eager"])
    assert r.exit_code == 0, r.output
    with pytest.warns(UserWarning, match="single-image FLAME fit failed"):
        r = run.invoke(app, ["avatar", "--image", str(path), "--checkpoint", world["decoder"], "--out",
                             str(tmp_path / "av"), "--max-points", "3", "--turntable-frames", "1", "--size", "16"])
    assert r.exit_code == 0, r.output
    (g_img, g_ctx), (a_img, a_ctx) = context_spy[0], context_spy[-1]
    assert tuple(g_img.shape) == (1, 32, 32, 3) and g_img.dtype == torch.uint8
    assert np.array_equal(g_img[0].numpy(), expected)
    assert torch.equal(g_img, a_img) and torch.equal(g_ctx, a_ctx)


def test_evaluate_conditions_like_generate_points(world, demo_asset, tmp_path, context_spy, monkeypatch):
    """evaluate's source frame, given to generate-points as a file, gives the same conditioning input."""
    import pointillist_model.evaluate as ev
    from pipelines.cli import app
    from pointillist_model.evaluate import EvalConfig, evaluate

    frames = []
    original = ev.avatar_from_portrait

    def record(image, *a, **kw):
        frames.append(np.array(image))
        return original(image, *a, **kw)

    monkeypatch.setattr(ev, "avatar_from_portrait", record)
    evaluate(EvalConfig(store=world["store"], decoder=world["decoder"], out=str(tmp_path / "eval"),
                        points="generated", max_points=3, max_timesteps=1, metrics=["psnr"], allow_seen=True),
             demo_asset)
    assert len(frames) == 1 and frames[0].shape[:2] != (32, 32)  # the raw captured frame, not a pre-cut crop
    e_img = context_spy[0][0]
    Image.fromarray(frames[0]).save(tmp_path / "source.png")
    with pytest.warns(UserWarning, match="single-image FLAME fit failed"):
        r = CliRunner().invoke(app, ["generate-points", "--image", str(tmp_path / "source.png"), "--checkpoint",
                                     world["ar"], "--out", str(tmp_path / "gen"), "--max-points", "3"])
    assert r.exit_code == 0, r.output
    assert torch.equal(e_img, context_spy[-1][0])
    assert np.array_equal(e_img[0].numpy(), portrait_crop(frames[0], 32))


def test_an_animation_or_many_channels_is_one_line(tmp_path, world):
    import imageio.v3 as iio

    from pipelines.cli import app

    path = tmp_path / "anim.gif"
    iio.imwrite(path, np.zeros((3, 20, 20, 3), np.uint8))
    r = CliRunner().invoke(app, ["generate-points", "--image", str(path), "--checkpoint", world["ar"],
                                 "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "anim.gif" in r.output and "Traceback" not in r.output


def test_stores_keep_512_px_portraits_by_default_and_128_px_stores_still_read(tmp_path):
    """Issue 30 item 5: every producer of portraits defaults to 512 px (DINOv2 runs at 224-518),
    written and read back as ``(512, 512, 3)`` uint8; a store written at 128 px (the earlier
    default) still opens, validates and yields its 128 px portraits to training."""
    import dataclasses

    from store_samples import SMALL, make_sample

    from pipelines.job_configs import TokenizeJob
    from pipelines.stages import PipelineConfig
    from pointillist_data.store.datasets import SampleDataset
    from pointillist_data.store.loader import TokenWindowDataset
    from pointillist_data.store.supervision_config import SupervisionConfig
    from pointillist_data.store.supervision_write import SupervisionStoreConfig
    from pointillist_data.store.token_store import TokenStore, validate_store
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter
    from pointillist_model.portrait import conditioning_portrait

    assert StoreConfig().image_size == (512, 512) and SupervisionStoreConfig().crop_size == (512, 512)
    assert SupervisionConfig().crop_size == 512
    assert {f.name: f.default for f in dataclasses.fields(PipelineConfig)}["image_size"] == 512  # run's default
    assert TokenizeJob(canonical="c.npz", subject="1", out="s.npz", image="p.png").image_size == 512
    rng = np.random.default_rng(2)
    # a quarter-scale NeRSemble frame (802 x 550): a smooth head-sized patch on the white backdrop
    frame = np.full((802, 550, 3), 255, np.uint8)
    frame[250:550, 150:400] = np.asarray(Image.fromarray(rng.integers(0, 256, (30, 25, 3), dtype=np.uint8)).resize(
        (250, 300), Image.BILINEAR))
    small = {k: v for k, v in SMALL.items() if k != "image_size"}
    for side, path in ((StoreConfig().image_size[0], tmp_path / "new.zarr"), (128, tmp_path / "old.zarr")):
        crop = portrait_crop(frame, side)
        s = dataclasses.replace(make_sample(0, 40), image=crop)
        TokenStoreWriter.create(path, StoreConfig(**small, image_size=(side, side))).append([s])
        validate_store(path)
        st = TokenStore.open(path)
        img = SampleDataset(st)[0]["image"].numpy()
        assert img.shape == (side, side, 3) and img.dtype == np.uint8 and np.array_equal(img, crop)
        win = next(iter(TokenWindowDataset(st, window=64, with_conditioning=True)))
        assert tuple(win["image"].shape) == (side, side, 3)
        # a checkpoint trained on this store prepares a user's picture at the store's side
        assert conditioning_portrait(frame, {"portrait_size": side}).shape == (side, side, 3)
    stored = sum(f.stat().st_size for f in (tmp_path / "new.zarr" / "image").rglob("*") if f.name != "zarr.json")
    assert 0 < stored < 512 * 512 * 3 / 2  # compressed: well under the 768 KiB raw portrait
