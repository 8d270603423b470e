"""Long stages resume: the fit and the tracker's global pass checkpoint, and a re-run after a
kill -9, an injected crash or Ctrl-C ends with what an uninterrupted run gives.

Comparisons are bit-exact: on the CPU with PyTorch's deterministic kernels (which the
``fit`` / ``track`` commands and ``pointillist run`` turn on) every operation of a step is
reproducible, and the checkpoint holds the exact float32 parameters, Adam moments and random
states, so the resumed run performs the same operations on the same bits. (On CUDA the
rasteriser's atomic additions are order-dependent: there, resumed and uninterrupted fits
agree to float tolerance only, as two uninterrupted ones do.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pointillist_data.checkpoint import StageCheckpoint
from pointillist_data.errors import ConfigError
from pointillist_data.fileio import build_config
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.tracking.config import TrackingConfig
from pointillist_data.tracking.tracker import FlameTracker

FIT = {"iterations": 12, "checkpoint_every": 3, "log_every": 1000}
TRACK = {"rigid_iters": 3, "first_frame_iters": 5, "frame_iters": 3, "global_iters": 6, "render_cameras": 1,
         "checkpoint_every": 2}


@pytest.fixture
def deterministic():
    mode = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])


@pytest.fixture(scope="module")
def sequence(synthetic_capture):
    from pointillist_data.tracking.stage import load_sequence

    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    return load_sequence(root, pid, cfg.sequence, root / f"{pid:03d}/ground_truth/{cfg.sequence}/landmark2d/GT")


@pytest.fixture(scope="module")
def export(sequence, demo_asset, tmp_path_factory):
    """A quickly tracked export to fit on."""
    from pointillist_data.tracking.stage import run_tracking

    out = tmp_path_factory.mktemp("ck_track")
    run_tracking(sequence, demo_asset, out, TrackingConfig(**{**TRACK, "checkpoint_every": 0}))
    return out / "export"


def _fit_cmd(export, out, cfg_file):
    return [sys.executable, "-m", "pipelines.cli", "fit", "--tracking", str(export), "--out", str(out),
            "--config", str(cfg_file)]


@pytest.fixture(scope="module")
def fit_ref(export, tmp_path_factory):
    """An uninterrupted `pointillist fit` and its config file."""
    d = tmp_path_factory.mktemp("ck_fit")
    cfg = d / "fit.json"
    cfg.write_text(json.dumps(FIT))
    subprocess.run(_fit_cmd(export, d / "ref", cfg), check=True, capture_output=True, env=_env())
    assert not (d / "ref" / "checkpoint").exists()  # removed when the fit finished
    return d / "ref", cfg


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def _wait_for(path, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


def test_fit_killed_then_rerun_matches_uninterrupted(export, fit_ref, tmp_path):
    ref, cfg = fit_ref
    out = tmp_path / "killed"
    proc = subprocess.Popen(_fit_cmd(export, out, cfg), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(out / "checkpoint" / "fit.pt", proc), "no checkpoint appeared"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    saved = torch.load(out / "checkpoint" / "fit.pt", weights_only=True)["it"]
    assert 3 <= saved < FIT["iterations"] and saved % 3 == 0
    r = subprocess.run(_fit_cmd(export, out, cfg), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((out / "fitting_record.json").read_text())
    assert rec["resumed_from"] >= saved  # it continued (later checkpoints may have been written before the kill)
    assert (out / "point_cloud.ply").read_bytes() == (ref / "point_cloud.ply").read_bytes()
    assert (out / "flame_param.npz").read_bytes() == (ref / "flame_param.npz").read_bytes()
    assert rec["densification"] == json.loads((ref / "fitting_record.json").read_text())["densification"]
    assert not (out / "checkpoint").exists()


def test_fit_ctrl_c_says_so_and_resumes_from_that_step(export, fit_ref, tmp_path):
    ref, cfg = fit_ref
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_fit_cmd(export, out, cfg), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert _wait_for(out / "checkpoint" / "fit.pt", proc), "the fit never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted; re-run the same command to resume", err
    # the fit finished the step it was in and wrote a checkpoint of it
    assert torch.load(out / "checkpoint" / "fit.pt", weights_only=True)["it"] >= 3
    r = subprocess.run(_fit_cmd(export, out, cfg), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "point_cloud.ply").read_bytes() == (ref / "point_cloud.ply").read_bytes()


def test_tracker_global_pass_resumes_after_a_crash(sequence, demo_asset, tmp_path, deterministic):
    cfg = TrackingConfig(**TRACK)
    ref = FlameTracker(demo_asset, cfg).track(sequence)

    class Crash(FlameTracker):
        calls = 0

        def _render_terms(self, *a):  # once per global iteration
            Crash.calls += 1
            if Crash.calls == 4:
                raise RuntimeError("injected crash in global iteration 3")
            return super()._render_terms(*a)

    ck = tmp_path / "ck"
    with pytest.raises(RuntimeError, match="injected"):
        Crash(demo_asset, cfg).track(sequence, checkpoint=ck)
    assert torch.load(ck / "track.pt", weights_only=True)["it"] == 2

    class Resumed(FlameTracker):
        def _fit_frame(self, *a, **k):  # the sequential pass is in the checkpoint
            raise AssertionError("the sequential pass ran again")

    res = Resumed(demo_asset, cfg).track(sequence, checkpoint=ck)
    for k in ("shape", "expr", "rotation", "translation", "neck_pose", "jaw_pose", "static_offset"):
        np.testing.assert_array_equal(getattr(res.params, k), getattr(ref.params, k), err_msg=k)
    assert res.kept == ref.kept and res.flagged == ref.flagged
    assert not ck.exists()


def test_checkpoint_of_other_inputs_or_torn_is_not_resumed(tmp_path):
    folder = tmp_path / "ck"
    a = StageCheckpoint(folder, "fit", {"config": {"seed": 0}}, 5)
    a.save({"it": 5, "x": torch.arange(3)})
    assert a.load()["it"] == 5
    assert StageCheckpoint(folder, "fit", {"config": {"seed": 1}}, 5).load() is None
    data = a.path.read_bytes()
    a.path.write_bytes(data[: len(data) // 2])  # a torn file (the writer renames, so only disk damage does this)
    assert a.load() is None
    assert [p.name for p in folder.iterdir()] == ["fit.pt"]  # no temporary left beside it
    a.remove()
    assert not folder.exists()
    assert [a.due(i) for i in range(11)] == [False, False, False, False, False, True] + [False] * 4 + [True]


@pytest.mark.parametrize("cls", [FittingConfig, TrackingConfig])
def test_checkpoint_interval_is_validated_and_keys_no_output(cls):
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            build_config(cls, {"checkpoint_every": bad}, "cfg.json")
    assert build_config(cls, {"checkpoint_every": 0}, "cfg.json").checkpoint_every == 0
    from pipelines.stages import PipelineConfig, stage_config

    section, stage = ("fitting", "fit") if cls is FittingConfig else ("tracking", "track")
    a = PipelineConfig(capture="c", out="o", participants=[1], **{section: {"checkpoint_every": 7}})
    b = PipelineConfig(capture="c", out="o", participants=[1])
    assert stage_config(a, stage) == stage_config(b, stage)  # a run that differs only there reuses outputs


def test_checkpoints_key_the_device_type_not_the_index():
    """A checkpoint written on the CPU is not resumed on CUDA (other kernels, other result),
    while another GPU index or log period resumes."""
    from pointillist_data.checkpoint import result_config
    from pointillist_data.fitting.config import FittingConfig

    cpu = result_config(FittingConfig(device="cpu"))
    assert cpu != result_config(FittingConfig(device="cuda"))
    assert result_config(FittingConfig(device="cuda:0")) == result_config(FittingConfig(device="cuda:1"))
    assert cpu == result_config(FittingConfig(device="cpu", log_every=7, checkpoint_every=3))
