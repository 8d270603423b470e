"""`pointillist run --videos DIR`: a synthetic monocular clip through landmarks -> track -> fit
(held-out frames) -> canonicalize -> tokenize -> shard into a store that validates, with capture
kind ``monocular`` in the provenance and the dataset card; resumption; bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.stages import PipelineConfig
from pointillist_data.errors import ConfigError, InputError

# landmark-only tracking plus a couple of rendered global steps; a few fitting steps
BUDGET = {"tracking": {"rigid_iters": 30, "first_frame_iters": 40, "frame_iters": 12, "global_iters": 2,
                       "render_cameras": 1, "face_crop_size": 64},
          "fitting": {"iterations": 12, "log_every": 1000, "holdout_every": 3}}


@pytest.fixture(scope="module")
def videos(tmp_path_factory, demo_asset):
    from pointillist_data.capture.synthetic_video import make_synthetic_video

    d = tmp_path_factory.mktemp("videos")
    sv = make_synthetic_video(d / "gen", demo_asset, frames=8, size=(160, 96), seed=4)
    (d / "in").mkdir()
    (d / "lm").mkdir()
    shutil.copy(sv.video, d / "in" / "alice.mp4")
    shutil.copy(sv.landmarks, d / "lm" / "alice.npz")
    (d / "in" / "notes.txt").write_text("not a video")  # ignored
    return d


def _args(videos, out, *extra):
    cfg = out.parent / f"{out.name}_config.json"
    cfg.write_text(json.dumps(BUDGET))
    return ["run", "--videos", str(videos / "in"), "--out", str(out), "--workers", "1", "--config", str(cfg),
            "--landmarks", f"files:{videos}/lm/{{subject}}.npz", "--image-size", "32", *extra]


def test_run_videos_into_a_valid_store(videos, tmp_path):
    from pointillist_data.store.token_store import TokenStore, validate_store

    out = tmp_path / "run"
    res = CliRunner().invoke(app, _args(videos, out))
    assert res.exit_code == 0, res.output
    validate_store(str(out / "store.zarr"))
    val = CliRunner().invoke(app, ["validate", str(out / "store.zarr")])
    assert val.exit_code == 0, val.output
    st = TokenStore.open(str(out / "store.zarr"))
    assert st.subject_ids() == ["alice"]  # the file stem
    prov = json.loads((out / "store.zarr" / "manifest.json").read_text())["samples"][0]["provenance"]
    assert prov["capture"] == "monocular"
    q = prov["quality"]
    # 8 frames: VHAP's split trains on the first ceil(0.7 * 8) = 6 timesteps; every 3rd of them
    # (2 and 5) is held out: 2 held-out images, whose PSNR is the sample's quality figure
    fit = json.loads((out / "work" / "alice" / "fit" / "record.json").read_text())
    assert fit["config"]["holdout_every"] == 3
    fit_dir = out / "work" / "alice" / "fit" / fit["output_dir"].rstrip("/").split("/")[-1]
    held = json.loads((fit_dir / "fitting_record.json").read_text())["metrics"]["heldout"]
    assert held["images"] == 2
    # (low: the frames' background is unmasked and the fit is a few steps; a finite figure is the point)
    assert q["psnr"] == pytest.approx(held["psnr"]) and 0 < q["psnr"] < 60
    assert q["landmark_iod_pct"] is not None and q["cameras"] == 1
    card = (out / "store.zarr" / "DATASET.md").read_text()
    assert "Monocular videos** (1 sample(s)" in card and "NeRSemble**" not in card
    # resumable: a second run skips every stage and appends nothing
    again = CliRunner().invoke(app, _args(videos, out))
    assert again.exit_code == 0, again.output
    for stage in ("landmarks", "track", "fit", "canonicalize", "tokenize"):
        rec = json.loads((out / "work" / "alice" / stage / "record.json").read_text())
        assert rec["status"] == "complete" and rec["participant"] == "alice"
    assert not (out / "work" / "alice" / "supervise").exists()  # not run for videos
    assert len(TokenStore.open(str(out / "store.zarr"))) == 1


def test_holdout_frames_against_hand_computed_split():
    from pointillist_data.fitting.stage import holdout_frames

    split = np.array(["train"] * 6 + ["test"] * 2)
    ts = np.arange(8)
    # train timesteps 0..5, every 2nd held out: 1, 3, 5; test stays test
    assert holdout_frames(split, ts, 2).tolist() == ["train", "val", "train", "val", "train", "val", "test", "test"]
    # two images per timestep (same timestep twice): both held out together
    assert holdout_frames(np.array(["train"] * 4), np.array([0, 0, 1, 1]), 2).tolist() == ["train", "train",
                                                                                        "val", "val"]


def test_videos_config_is_validated(videos, tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        PipelineConfig(out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="exactly one"):
        PipelineConfig(out=str(tmp_path / "o"), capture=str(tmp_path), videos=str(videos / "in"))
    with pytest.raises(InputError, match="no video files"):
        PipelineConfig(out=str(tmp_path / "o"), videos=str(videos / "lm"))
    with pytest.raises(InputError, match="no video for participant"):
        PipelineConfig(out=str(tmp_path / "o"), videos=str(videos / "in"), participants="bob")
    assert PipelineConfig(out=str(tmp_path / "o"), videos=str(videos / "in")).participants == ["alice"]
    # on the command line: one line, exit code 2, nothing written
    res = CliRunner().invoke(app, ["run", "--videos", str(tmp_path / "none"), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "not a folder" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o2").exists()
