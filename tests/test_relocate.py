"""Relocatable folders (issue 27 item 6): a run folder or a model folder that is copied and
whose original is deleted still works, reading its own files; ``status`` says which store it
read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY
from decoder_world import build_world
from store_samples import SMALL, make_sample
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.runner import run_pipeline
from pipelines.stages import PipelineConfig
from pointillist_data.store.write import StoreConfig, TokenStoreWriter

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def _status(folder) -> str:
    r = CliRunner().invoke(app, ["status", str(folder)])
    assert r.exit_code == 0, r.output
    return r.output


def test_copied_run_folder_reads_its_own_store(tiny_capture, tmp_path):
    root, cfg = tiny_capture
    out = tmp_path / "run"
    pc = PipelineConfig(capture=str(root), out=str(out), participants=[cfg.participants[0]], landmarks=GT, **TINY)
    first = run_pipeline(pc, workers=1, until="landmarks")
    assert first["failed"] == []
    rc = json.loads((out / "run_config.json").read_text())
    assert rc["store"] == "store.zarr" and rc["supervision_store"] == "supervision.zarr", rc
    # a store where the shard step puts it
    TokenStoreWriter.create(out / "store.zarr", StoreConfig(**SMALL)).append([make_sample(i, 200) for i in range(2)])
    assert f"store: {out / 'store.zarr'}: 2 samples (path from run_config.json)" in _status(out)

    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(out)
    text = _status(copy)
    assert f"store: {copy / 'store.zarr'}: 2 samples (path from run_config.json)" in text, text
    assert f"supervision store: {copy / 'supervision.zarr'}: absent" in text, text
    # a run_config.json of an older version, with absolute paths inside the original folder:
    # those are taken from the copy too
    (copy / "run_config.json").write_text(json.dumps({**rc, "out": str(out), "store": str(out / "store.zarr")}))
    assert f"store: {copy / 'store.zarr'}: 2 samples" in _status(copy)
    # running again in the copy finds its own finished stage
    again = run_pipeline(PipelineConfig(**{**pc.to_dict(), "out": str(copy), "store": None, "supervision_store": None}),
                         workers=1, until="landmarks")
    assert again["summaries"][0]["stages"]["landmarks"] == "skipped (complete)", again["summaries"]


@pytest.fixture(scope="module")
def model_folder(demo_asset, tmp_path_factory):
    """``model/ar/checkpoint.pt`` and a decoder trained against it in ``model/decoder``."""
    from pointillist_model.decoder_train import DecoderTrainConfig, DecoderTrainer

    d = tmp_path_factory.mktemp("relocate_model")
    world = build_world(d / "world", demo_asset, points=600, timesteps=2)
    model = d / "model"
    (model / "ar").mkdir(parents=True)
    shutil.copyfile(world["ar"], model / "ar" / "checkpoint.pt")
    cfg = DecoderTrainConfig(store=world["store"], supervision=world["supervision"],
                             ar_checkpoint=str(model / "ar" / "checkpoint.pt"), out=str(model / "decoder"),
                             preset="tiny", w_lpips=0.0, cameras_per_step=2, steps=1, crops=1, log_every=1,
                             ckpt_every=10_000)
    DecoderTrainer(cfg, demo_asset).train()
    return d, model, world


def test_copied_model_folder_uses_its_own_ar(model_folder, demo_asset):
    from pointillist_data.store.token_store import TokenStore
    from pointillist_model.avatar import AvatarConfig, avatar_from_portrait
    from pointillist_model.decoder_train import load_decoder

    d, model, world = model_folder
    copy = d / "copied"
    shutil.copytree(model, copy)
    shutil.rmtree(model)
    ar = copy / "ar" / "checkpoint.pt"
    _, meta = load_decoder(copy / "decoder" / "checkpoint.pt")
    assert meta["ar_checkpoint"] == str(ar)
    # the copy works with the original gone: an avatar from the copied folder alone
    portrait = np.asarray(TokenStore.open(world["store"]).group["image"][0])
    av, info = avatar_from_portrait(portrait, copy / "decoder" / "checkpoint.pt", demo_asset,
                                    AvatarConfig(max_points=20, size=16, turntable_frames=1))
    assert info["ar_checkpoint"] == str(ar) and 1 <= info["points"] <= 20
    # a different file at that place is not taken for the AR the decoder was trained with
    ar.write_bytes(ar.read_bytes() + b"\0")
    _, meta = load_decoder(copy / "decoder" / "checkpoint.pt")
    assert meta["ar_checkpoint"] == str(model / "ar" / "checkpoint.pt")
