"""`pointillist run --videos DIR`: a synthetic monocular clip through landmarks -> track -> fit
(held-out frames) -> canonicalize -> tokenize -> shard into a store that validates, with capture
kind ``monocular`` in the provenance and the dataset card; resumption; bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.stages import PipelineConfig
from pointillist_data.capture.matting import iou
from pointillist_data.errors import ConfigError, InputError
from pointillist_data.tracking.face_crop import FaceCrop

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
    shutil.copy(sv.background, d / "in" / "alice_background.png")  # the plate: matting 'background'
    (d / "in" / "notes.txt").write_text("not a video")  # ignored
    return d


def _args(videos, out, *extra):
    cfg = out.parent / f"{out.name}_config.json"
    cfg.write_text(json.dumps(BUDGET))
    return ["run", "--videos", str(videos / "in"), "--out", str(out), "--workers", "1", "--config", str(cfg),
            "--landmarks", f"files:{videos}/lm/{{subject}}.npz", "--image-size", "32", *extra]


def test_run_videos_into_a_valid_store(videos, tmp_path):
    from pointillist_data.store.supervision import SupervisionStore, validate_supervision_store
    from pointillist_data.store.token_store import TokenStore, validate_store

    out = tmp_path / "run"
    # the plan first: frames from the video's header, the input files' bytes, every stage to run
    plan = CliRunner().invoke(app, _args(videos, out, "--dry-run"))
    assert plan.exit_code == 0, plan.output
    nbytes = sum((videos / f).stat().st_size for f in ("in/alice.mp4", "in/alice_background.png", "lm/alice.npz"))
    assert "video alice: 8 frames read at 160x96, tracked and fitted on a 64x64 face crop" in plan.output
    assert f"input {nbytes / 1000:.1f} kB" in plan.output and "problems: none found" in plan.output
    assert "supervise run" in plan.output and not out.exists()
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
    assert q["psnr"] == pytest.approx(held["psnr"]) and 0 < q["psnr"] < 60
    assert q["ssim"] == pytest.approx(held["ssim"]) and 0 < q["ssim"] <= 1
    assert q["landmark_iod_pct"] is not None and q["cameras"] == 1
    # matted: the plate beside the video picks 'background'; the export's masks match the
    # renderer's alpha cut to the same face crop
    track = json.loads((out / "work" / "alice" / "track" / "record.json").read_text())
    assert track["metrics"]["matting"] == "background"
    track_dir = out / "work" / "alice" / "track" / track["output_dir"].rstrip("/").split("/")[-1]
    box = FaceCrop(**json.loads((track_dir / "tracking_record.json").read_text())["face_crop"])
    truth = np.load(videos / "gen" / "alpha.npz")["alpha"]
    masks = sorted((track_dir / "export" / "fg_masks").glob("*.png"))
    assert len(masks) == 8
    for k, m in enumerate(masks):
        assert iou(np.asarray(Image.open(m)) / 255.0, box.image(truth[k]) / 255.0) > 0.9, m.name
    card = (out / "store.zarr" / "DATASET.md").read_text()
    assert "Monocular videos** (1 sample(s)" in card and "NeRSemble**" not in card
    # decoder supervision: one camera, the export's frames and matted masks, in a store that validates
    sup = SupervisionStore.open(str(out / "supervision.zarr"))
    assert sup.subject_ids() == ["alice"]
    validate_supervision_store(str(out / "supervision.zarr"))  # raises on any problem
    rec = json.loads((out / "work" / "alice" / "supervise" / "record.json").read_text())
    assert rec["metrics"]["cameras"] == 1 and rec["metrics"]["image_size"] == [64, 64]
    # resumable: a second run skips every stage and appends nothing; the plan says so
    again = CliRunner().invoke(app, _args(videos, out))
    assert again.exit_code == 0, again.output
    for stage in ("landmarks", "track", "fit", "canonicalize", "tokenize", "supervise"):
        rec = json.loads((out / "work" / "alice" / stage / "record.json").read_text())
        assert rec["status"] == "complete" and rec["participant"] == "alice"
    assert len(TokenStore.open(str(out / "store.zarr"))) == 1
    assert len(SupervisionStore.open(str(out / "supervision.zarr"))) == 1
    plan = CliRunner().invoke(app, _args(videos, out, "--dry-run"))
    assert plan.exit_code == 0 and plan.output.count("skip (complete)") == 6, plan.output


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
    # a matting method that needs a plate, and none beside the video: the file looked for is named
    (tmp_path / "v").mkdir()
    shutil.copy(videos / "in" / "alice.mp4", tmp_path / "v" / "bob.mp4")
    res = CliRunner().invoke(app, ["run", "--videos", str(tmp_path / "v"), "--out", str(tmp_path / "o3"),
                                   "--matting", "background"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "bob_background.png: not found: matting 'background' needs the background plate" in res.output.replace("\n", "")


def test_video_track_resumes_from_its_checkpoint_after_an_interruption(videos, tmp_path, monkeypatch):
    """The global pass crashes after its first checkpoint; the next attempt of the
    stage (same command) continues from that checkpoint: the sequential pass is not redone."""
    from pipelines.runner import run_participant
    from pipelines.workspace import Workspace
    from pointillist_data.tracking.tracker import FlameTracker

    over = {**BUDGET["tracking"], "global_iters": 3, "checkpoint_every": 1}
    cfg = PipelineConfig(out=str(tmp_path / "run"), videos=str(videos / "in"), tracking=over,
                         landmarks=f"files:{videos}/lm/{{subject}}.npz").to_dict()
    calls = {"n": 0}
    render = FlameTracker._render_terms

    def interrupted(self, *a):  # once per global iteration
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected crash in global iteration 1")
        return render(self, *a)

    monkeypatch.setattr(FlameTracker, "_render_terms", interrupted)
    first = run_participant(cfg, "alice", until="track")
    assert first["status"] == "failed" and first["failed_stage"] == "track" and "injected" in first["error"]
    ws = Workspace(str(tmp_path / "run"))
    key = ws.read_record("alice", "track")["input_hash"]
    ck = ws.checkpoint_dir("alice", "track", key)
    assert torch.load(ck / "track.pt", weights_only=True)["it"] == 1  # outlives the attempt's folder

    def no_sequential_pass(self, *a, **k):
        raise AssertionError("the sequential pass ran again")

    monkeypatch.setattr(FlameTracker, "_render_terms", render)
    monkeypatch.setattr(FlameTracker, "_fit_frame", no_sequential_pass)
    again = run_participant(cfg, "alice", until="track")
    assert again["status"] == "complete", again
    assert not ck.exists()  # removed when the stage finished
