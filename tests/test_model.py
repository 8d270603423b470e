"""The AR model: overfitting and greedy regeneration, exact resume, conditioning (generation itself:
test_generate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointillist_model.ar import PRESETS, ARConfig, PointillistAR
from pointillist_model.condition import ConditioningError, Dinov2ImageEncoder, PrecomputedImageFeatures
from pointillist_model.generate import sample_points
from pointillist_model.train import TrainConfig, Trainer, load_model


def _tiny(**kw) -> PointillistAR:
    torch.manual_seed(0)
    return PointillistAR(ARConfig(**{**PRESETS["tiny"].to_dict(), **kw}))


def _context(model, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 255, (B, 32, 32, 3), generator=g, dtype=torch.uint8)
    verts = torch.randn(B, 400, 3, generator=g) * 0.1
    return model.context(imgs, verts)


@pytest.fixture(scope="module")
def small_store(synthetic_capture, demo_asset, tmp_path_factory):
    """One synthetic identity's canonical cloud subsampled to 120 points, in a store."""
    from pointillist_data.canonical import CANONICAL_PARAMS, CanonicalCloud, canonicalize, to_sample
    from pointillist_data.flame import FlameParams
    from pointillist_data.gaussians import read_ply
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter
    from pointillist_data.tokens import DEFAULT_BOX, Vocabulary

    root, cfg, _ = synthetic_capture
    gt = root / f"{cfg.participants[0]:03d}" / "ground_truth"
    cloud = canonicalize(read_ply(gt / "point_cloud.ply", demo_asset.num_faces), FlameParams.load(gt / "flame_param.npz"),
                         demo_asset)
    keep = np.random.default_rng(0).choice(len(cloud), 120, replace=False)
    sub = CanonicalCloud(**{k: (getattr(cloud, k)[keep] if k != "flame_shape" else cloud.flame_shape)
                            for k in CanonicalCloud.__dataclass_fields__})
    s = to_sample("900", sub, np.full((32, 32, 3), 128, np.uint8), DEFAULT_BOX, Vocabulary())
    path = tmp_path_factory.mktemp("ar") / "store.zarr"
    w = TokenStoreWriter.create(path, StoreConfig(canonical=CANONICAL_PARAMS, image_size=(32, 32),
                                                  tokens_per_shard=1 << 14, tokens_per_chunk=1 << 12,
                                                  points_per_shard=1 << 12, points_per_chunk=1 << 10))
    w.append([s])
    return str(path), s


def test_tiny_model_overfits_and_regenerates_greedily(small_store, demo_asset, tmp_path):
    path, sample = small_store
    cfg = TrainConfig(store=path, out=str(tmp_path), preset="tiny", window=488, batch_size=2, steps=400, lr=3e-3,
                      warmup=20, min_lr_ratio=0.05, ckpt_every=10_000, log_every=100)
    tr = Trainer(cfg, demo_asset)
    log = tr.train()
    assert log[-1]["loss"] < log[0]["loss"] * 0.05
    model = load_model(tmp_path / "checkpoint.pt")
    ctx = model.context(torch.as_tensor(sample.image)[None], tr.flame_vertices[:1])
    gen = sample_points(model, ctx, max_points=200, greedy=True).tokens[0].numpy()
    ref = sample.tokens.astype(np.int64)
    n = min(len(gen), len(ref))
    exact = float((gen[:n] == ref[:n]).sum()) / len(ref)
    print(f"overfit: {exact * 100:.2f} % exact tokens ({len(gen)} generated, {len(ref)} reference)")
    assert exact >= 0.99


def test_interrupted_and_resumed_training_matches(small_store, demo_asset, tmp_path):
    path, _ = small_store
    base = dict(store=path, preset="tiny", window=128, stride=64, batch_size=2, steps=16, lr=1e-3, warmup=4,
                ckpt_every=8, log_every=1)
    full = Trainer(TrainConfig(out=str(tmp_path / "full"), **base), demo_asset).train()
    first = Trainer(TrainConfig(out=str(tmp_path / "cut"), **base), demo_asset)
    first.train(steps=8)  # checkpoint at step 8, then "crash"
    resumed = Trainer(TrainConfig(out=str(tmp_path / "cut"), **base), demo_asset)
    resumed.load(tmp_path / "cut" / "checkpoint.pt")
    rest = resumed.train()
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[8:]]


def test_resuming_a_checkpoint_of_another_model_is_one_clear_error(small_store, demo_asset, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pointillist_data.errors import InputError

    path, _ = small_store
    base = dict(store=path, preset="tiny", window=128, stride=64, batch_size=2, steps=2, lr=1e-3, warmup=1,
                ckpt_every=2, log_every=1)
    # the tiny preset as it was before dim_head = dim / heads: 4 heads of 64
    Trainer(TrainConfig(out=str(tmp_path / "old"), model={"heads": 4, "dim_head": 64}, **base), demo_asset).train()
    ck = tmp_path / "old" / "checkpoint.pt"
    with pytest.raises(InputError, match="heads 4 vs 2, head_dim 64 vs 32"):
        Trainer(TrainConfig(out=str(tmp_path / "new"), **base), demo_asset).load(ck)
    r = CliRunner().invoke(app, ["train-ar", "--store", str(path), "--out", str(tmp_path / "new"), "--preset", "tiny",
                                 "--steps", "2", "--window", "128", "--resume", str(ck)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert str(ck) in r.output and "its model differs from this run's" in r.output


def test_dinov2_backend_needs_local_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ConditioningError, match="no DINOv2 checkpoint"):
        Dinov2ImageEncoder(tmp_path)
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=28, patch_size=14)
    enc = Dinov2ImageEncoder(config=cfg, image_size=28)
    feats = enc(torch.randint(0, 255, (2, 40, 40, 3), dtype=torch.uint8))
    assert feats.shape == (2, 1 + 4, 32)
    enc.model.save_pretrained(tmp_path / "dino")
    again = Dinov2ImageEncoder(tmp_path / "dino", image_size=28)
    torch.testing.assert_close(again(torch.zeros(1, 28, 28, 3, dtype=torch.uint8)),
                               enc(torch.zeros(1, 28, 28, 3, dtype=torch.uint8)))
    model = PointillistAR(ARConfig(**{**PRESETS["tiny"].to_dict(), "image_encoder": "dinov2", "image_size": 28}),
                          dinov2_config=cfg)
    assert model.context(torch.zeros(1, 28, 28, 3, dtype=torch.uint8), torch.zeros(1, 300, 3)).shape == (1, 5 + 16, 64)
    np.savez(tmp_path / "f.npz", features=np.ones((3, 5, 8), np.float32))
    assert PrecomputedImageFeatures(tmp_path / "f.npz")(torch.tensor([2])).shape == (1, 5, 8)


def test_tiny_preset_has_the_paper_proportions_and_old_checkpoints_still_load(tmp_path):
    # dim_head = dim / heads, as the paper preset's 1024 / 16 = 64
    assert (PRESETS["paper"].head_dim, PRESETS["paper"].heads, PRESETS["paper"].dim) == (64, 16, 1024)
    assert (PRESETS["tiny"].head_dim, PRESETS["tiny"].heads, PRESETS["tiny"].dim) == (32, 2, 64)
    m = _tiny()
    assert m.net.attn_layers.layers[0][1].to_q.out_features == PRESETS["tiny"].dim  # 2 heads x 32
    # a checkpoint written before ARConfig had dim_head: built with x-transformers' default of 64
    old = {k: v for k, v in PRESETS["tiny"].to_dict().items() if k != "dim_head"}
    old["heads"] = 4
    torch.manual_seed(1)
    model = PointillistAR(ARConfig(**{**old, "dim_head": 64}))
    assert model.net.attn_layers.layers[0][1].to_q.out_features == 256
    ck = tmp_path / "old.pt"
    torch.save({"model": model.state_dict(), "model_config": old}, ck)
    loaded = load_model(ck)
    assert loaded.config.head_dim == 64
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("bad", [{"grad_clip": 0.0}, {"device": "tpu:0"}, {"steps": 0}, {"min_lr_ratio": 1.5},
                                 {"log_every": 0}, {"lr": -1.0}])
def test_trainers_share_one_validated_optimization_config(bad):
    from pointillist_data.errors import ConfigError
    from pointillist_data.fileio import build_config
    from pointillist_model.decoder_train import DecoderTrainConfig
    from pointillist_model.trainer_base import OptimizationConfig

    base = {"store": "s", "out": "o"}
    for cls, kw in ((TrainConfig, base), (DecoderTrainConfig, {**base, "supervision": "v", "ar_checkpoint": "a", "w_lpips": 0.0})):
        assert issubclass(cls, OptimizationConfig)
        field = next(iter(bad))
        with pytest.raises(ConfigError, match=f"train.json: .*{field}"):
            build_config(cls, {**kw, **bad}, "train.json")
        cfg = build_config(cls, {**kw, "lr": 3e-3, "warmup": 7, "device": "cuda:1"}, "train.json")  # any torch device
        assert build_config(cls, cfg.to_dict(), "train.json") == cfg


# ---------------------------------------------------------------------------- splits (issue 27)
SPLIT = "manifests/examples/split_synthetic.json"  # 900 test; 903, 905 train


def test_leak_reproduction_refuses_to_train_on_the_test_split(small_store, demo_asset, tmp_path):
    """The issue's reproduction: identity 900 is ``test`` in the example split; train-ar on
    that store trains on zero test windows (it refuses: there is nothing else) unless
    ``--split all`` says so, and the checkpoint records the identities it trained on."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from pipelines.cli import app
    from pointillist_model.trainer_base import checkpoint_subjects

    _, sample = small_store
    assert "900" in json.loads((Path(__file__).parents[1] / SPLIT).read_text())["test"]
    sample.save(tmp_path / "sample.npz")
    run = CliRunner().invoke
    store = tmp_path / "s.zarr"
    assert run(app, ["shard", str(tmp_path / "sample.npz"), "--out", str(store), "--split",
                     str(Path(__file__).parents[1] / SPLIT)]).exit_code == 0
    r = run(app, ["train-ar", "--store", str(store), "--out", str(tmp_path / "ar"), "--steps", "2", "--window", "128"])
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert lines[0].startswith("error: --split") and "no sample of split 'train'" in lines[0] and "test 1" in lines[0]
    assert not (tmp_path / "ar" / "checkpoint.pt").exists()
    r = run(app, ["train-ar", "--store", str(store), "--out", str(tmp_path / "all"), "--steps", "2", "--window", "128",
                  "--split", "all"])
    assert r.exit_code == 0, r.output
    assert "--split all" in r.output and "test identities included" in r.output
    assert checkpoint_subjects(tmp_path / "all" / "checkpoint.pt") == ["900"]


def test_train_ar_trains_on_the_train_split_only(small_store, demo_asset, tmp_path):
    import dataclasses
    import json

    from pointillist_data.provenance import assign_split
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter
    from pointillist_model.trainer_base import checkpoint_subjects

    _, sample = small_store
    split = json.loads(open(SPLIT).read())
    ids = ["900", "903", "901", "905"]  # test, train, test, train
    samples = [dataclasses.replace(sample, subject_id=s) for s in ids]
    path = tmp_path / "s.zarr"
    TokenStoreWriter.create(path, StoreConfig(image_size=(32, 32), tokens_per_shard=1 << 14, tokens_per_chunk=1 << 12,
                                              points_per_shard=1 << 12, points_per_chunk=1 << 10)).append(
        samples, annotations={s: {"split": assign_split(s, split)} for s in ids})
    base = dict(store=str(path), preset="tiny", window=128, stride=128, batch_size=3, steps=12, lr=1e-3, warmup=1,
                ckpt_every=6, log_every=1)
    tr = Trainer(TrainConfig(out=str(tmp_path / "a"), **base), demo_asset)
    log = tr.train()
    seen = {w[0] for rec in log for w in rec["windows"][0]}
    assert seen == {1, 3}  # every window of 903 and 905 (12 steps x 3 > their windows), none of 900 / 901
    assert checkpoint_subjects(tmp_path / "a" / "checkpoint.pt") == ["903", "905"]
    # a resume with another selection keeps what the first part saw
    more = Trainer(TrainConfig(out=str(tmp_path / "a"), **{**base, "steps": 13}, where="subject_id == 905"), demo_asset)
    more.load(tmp_path / "a" / "checkpoint.pt")
    more.train()
    assert checkpoint_subjects(tmp_path / "a" / "checkpoint.pt") == ["903", "905"]
    whole = Trainer(TrainConfig(out=str(tmp_path / "b"), **base, split="all"), demo_asset)
    assert whole.dataset.subject_ids == ids


def test_train_ar_draws_its_loss_curve_and_reports_loss_and_eta(small_store, demo_asset, tmp_path):
    """Issue 29: ``loss_curve.png`` beside the checkpoint (redrawn from the whole ``log.jsonl``,
    so a resumed run's curve holds the earlier steps too), TensorBoard event files or one info
    line, and progress lines with the current loss and an ETA (a resumed run counts the steps left)."""
    from pictures import open_picture

    from pointillist_data.progress import LogProgress
    from pointillist_model.trainer_base import CURVE_NAME, TENSORBOARD_DIR, TENSORBOARD_MISSING, read_log

    path, _ = small_store
    base = dict(store=path, out=str(tmp_path), preset="tiny", window=128, stride=64, batch_size=2, steps=6, lr=1e-3,
                warmup=1, ckpt_every=3, log_every=2)
    lines: list[str] = []
    Trainer(TrainConfig(**base), demo_asset).train(steps=3, progress=LogProgress(lines.append, interval=0))
    open_picture(tmp_path / CURVE_NAME, (400, 200))
    steps = [ln for ln in lines if ln.split("] ", 1)[-1].startswith("training (tiny preset): ") and "/3 " in ln]
    assert steps and all("loss " in ln for ln in steps), lines
    assert any("ETA " in ln for ln in steps), lines
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert lines.count(TENSORBOARD_MISSING) == 1 and not (tmp_path / TENSORBOARD_DIR).exists()
    else:
        assert list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    first = (tmp_path / CURVE_NAME).read_bytes()
    lines.clear()
    tr = Trainer(TrainConfig(**base), demo_asset)
    tr.load(tmp_path / "checkpoint.pt")
    tr.train(progress=LogProgress(lines.append, interval=0))
    assert any("training (tiny preset) from step 3: started, 3 steps" in ln for ln in lines), lines
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [2, 3, 4, 6]  # both runs' records
    assert (tmp_path / CURVE_NAME).read_bytes() != first  # redrawn with the resumed steps
    open_picture(tmp_path / CURVE_NAME, (400, 200))


def test_read_log_keeps_the_last_record_of_each_step_and_skips_a_torn_line(tmp_path):
    """A run resumed from an earlier checkpoint logs some steps twice; a crash may tear the last line."""
    import json

    from pointillist_model.trainer_base import read_log, write_loss_curve

    recs = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"step": 4, "lo')
    assert read_log(tmp_path / "log.jsonl") == [recs[0], recs[2], recs[3]]
    with pytest.raises(ValueError, match="no record holds a loss"):
        write_loss_curve([{"step": 1}], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
