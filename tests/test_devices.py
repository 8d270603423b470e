"""Device and budget follow the hardware (pointillist_data.devices): ``auto`` picks CUDA with
the upstream-like presets where torch sees a GPU, the CPU budgets otherwise; a CPU budget on a
GPU machine warns, a CUDA preset without CUDA is a one-line error. CUDA is simulated by
monkeypatching ``torch.cuda.is_available`` (nothing here runs a CUDA kernel)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.stages import PipelineConfig, stage_config, stage_plans
from pointillist_data.devices import preset_config, resolve_device
from pointillist_data.errors import InputError
from pointillist_data.fitting.config import PRESETS as FIT_PRESETS
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.tracking.config import PRESETS as TRACK_PRESETS
from pointillist_data.tracking.config import TrackingConfig

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


@pytest.fixture
def gpu(monkeypatch):
    """A machine where torch sees one CUDA device (named, never used)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake H100")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_follows_the_hardware(gpu):
    p = resolve_device()
    assert (p.device, p.preset, p.warning) == ("cuda", "cuda", None)
    p = resolve_device("cuda:1")
    assert (p.device, p.preset, p.warning) == ("cuda:1", "cuda", None)


def test_auto_without_cuda_is_the_quiet_cpu_budget(no_gpu):
    p = resolve_device()
    assert (p.device, p.preset, p.warning) == ("cpu", "cpu", None)
    assert resolve_device("cpu").to_dict() == {"device": "cpu", "preset": "cpu"}


def test_cpu_budget_on_a_gpu_machine_warns(gpu):
    for dev, preset in (("cpu", "auto"), ("cuda", "cpu")):
        p = resolve_device(dev, preset)
        assert p.preset == "cpu" and p.warning and "CPU budget" in p.warning and "Fake H100" in p.warning
        assert "\n" not in p.warning


def test_cuda_without_cuda_is_an_error(no_gpu):
    with pytest.raises(InputError, match="--device: 'cuda' asked for, but torch .* sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="--cuda-preset: the CUDA preset needs a CUDA device"):
        resolve_device("auto", "cuda", preset_where="--cuda-preset")
    with pytest.raises(InputError, match="'tpu'"):
        resolve_device("tpu")
    with pytest.raises(InputError, match="unknown preset"):
        resolve_device("cpu", "big")


def test_cuda_preset_on_the_cpu_of_a_gpu_machine_is_an_error(gpu):
    with pytest.raises(InputError, match="the device is 'cpu'"):
        resolve_device("cpu", "cuda")


def test_fitting_preset_on_cuda_is_gaussian_avatars(gpu):
    cfg, plan = preset_config(FittingConfig, FIT_PRESETS, {})
    # GaussianAvatars' train.py defaults: 600k iterations, SH degree 3, feature lr 0.0025,
    # densify from 10k every 2k, opacity reset every 60k (of 600k)
    assert plan.preset == "cuda" and cfg.device == "cuda"
    assert (cfg.iterations, cfg.sh_degree, cfg.lr_feature) == (600_000, 3, 0.0025)
    assert (cfg.steps(cfg.densify_from), cfg.steps(cfg.densify_every), cfg.steps(cfg.opacity_reset_every)) == \
        (10_000, 2_000, 60_000)
    cfg, _ = preset_config(FittingConfig, FIT_PRESETS, {"iterations": 100})  # overrides go on top
    assert (cfg.iterations, cfg.sh_degree) == (100, 3)


def test_cpu_presets_are_the_old_defaults(no_gpu):
    # without CUDA nothing changes: the configs (and so the stage hashes) are the dataclass defaults
    assert preset_config(FittingConfig, FIT_PRESETS, {})[0] == FittingConfig()
    assert preset_config(TrackingConfig, TRACK_PRESETS, {})[0] == TrackingConfig()
    cfg, plan = preset_config(FittingConfig, FIT_PRESETS, {"iterations": 7})
    assert cfg == FittingConfig(iterations=7) and plan.preset == "cpu"


def test_tracking_cuda_preset_is_larger(gpu):
    cfg, plan = preset_config(TrackingConfig, TRACK_PRESETS, {})
    cpu = TrackingConfig()
    assert plan.preset == "cuda" and cfg.device == "cuda"
    # VHAP: 50 landmark + 50 photometric steps per later frame
    assert cfg.frame_iters == 100 and cfg.first_frame_iters > cpu.first_frame_iters
    assert cfg.global_iters > cpu.global_iters and cfg.render_cameras > cpu.render_cameras


def test_a_device_in_the_overrides_takes_the_place_of_the_option(gpu):
    cfg, plan = preset_config(FittingConfig, FIT_PRESETS, {"device": "cpu"}, where="run.json")
    assert cfg == FittingConfig() and plan.warning  # the CPU budget, said aloud


def test_pipeline_plan_and_stage_configs(gpu, tmp_path):
    pc = PipelineConfig(capture=str(tmp_path), out=str(tmp_path / "o"), participants=[1])
    plans = stage_plans(pc)
    assert plans["track"] == plans["fit"] == {"device": "cuda", "preset": "cuda"}
    assert plans["tokenize"] == {"device": "cpu", "preset": "cpu"} and plans["warnings"] == []
    assert stage_config(pc, "fit")["iterations"] == 600_000
    assert stage_config(pc, "track")["device"] == "cuda"
    pc = PipelineConfig(capture=str(tmp_path), out=str(tmp_path / "o"), participants=[1], fitting={"device": "cpu"})
    plans = stage_plans(pc)
    assert plans["fit"]["preset"] == "cpu" and plans["track"]["preset"] == "cuda"
    assert len(plans["warnings"]) == 1 and "CPU budget" in plans["warnings"][0]
    assert stage_config(pc, "fit")["iterations"] == FittingConfig().iterations


def test_pipeline_cuda_without_cuda_fails_before_running(no_gpu, tmp_path):
    from pipelines.runner import check_run

    pc = PipelineConfig(capture=str(tmp_path), out=str(tmp_path / "o"), participants=[1], device="cuda")
    with pytest.raises(InputError) as e:  # one problem among those check_run lists together
        check_run(pc)
    lines = getattr(e.value, "problems", [str(e.value)])
    assert any("--device: 'cuda' asked for, but torch" in p and "sees no CUDA device" in p for p in lines), lines


def test_stage_records_say_which_preset_ran(no_gpu, synthetic_capture, tmp_path):
    from pipelines.runner import run_participant

    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    out = tmp_path / "run"
    small = {"rigid_iters": 5, "first_frame_iters": 10, "frame_iters": 4, "global_iters": 2, "render_cameras": 1}
    pc = PipelineConfig(capture=str(root), out=str(out), participants=[pid], landmarks=GT, tracking=small)
    s = run_participant(pc.to_dict(), pid, until="track")
    assert s["status"] == "complete", s
    for stage in ("landmarks", "track"):
        rec = json.loads((out / "work" / f"{pid:03d}" / stage / "record.json").read_text())
        assert (rec["device"], rec["preset"]) == ("cpu", "cpu"), rec
    (own,) = [json.loads(p.read_text()) for p in (out / "work" / f"{pid:03d}").rglob("tracking_record.json")]
    assert own["preset"] == "cpu" and own["device"] == "cpu"  # the stage's own record says it too


def test_trainer_plans(gpu, tmp_path):
    from pointillist_model.trainer_base import BaseTrainer, auto_model_preset

    assert auto_model_preset("auto", "auto") == "paper" and auto_model_preset("auto", "cpu") == "tiny"
    assert auto_model_preset("tiny", "auto") == "tiny"
    tr = BaseTrainer(SimpleNamespace(device="cpu", preset="tiny", seed=0, out=str(tmp_path / "t")))
    assert tr.device == torch.device("cpu") and "CPU budget" in tr.plan.warning


def test_trainer_paper_preset_without_cuda(no_gpu, tmp_path):
    from pointillist_model.train import TrainConfig
    from pointillist_model.trainer_base import BaseTrainer

    assert TrainConfig(store="s", out="o").preset == "tiny"  # auto on a CPU machine
    with pytest.raises(InputError, match="CUDA preset needs a CUDA device"):
        BaseTrainer(SimpleNamespace(device="auto", preset="paper", seed=0, out=str(tmp_path / "t")))
    tr = BaseTrainer(SimpleNamespace(device="auto", preset="tiny", seed=0, out=str(tmp_path / "t")))
    assert tr.plan.warning is None and tr.device == torch.device("cpu")


def _one_line_error(r, *words):
    assert r.exit_code == 2, (r.exit_code, r.output)
    err = r.stderr or r.output
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2, lines
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("args,words", [
    (["fit", "--tracking", "t", "--out", "o", "--cuda-preset"], ["--cuda-preset", "CUDA preset needs a CUDA device"]),
    (["fit", "--tracking", "t", "--out", "o", "--device", "cuda"], ["--device", "no CUDA device"]),
    (["track", "--out", "o", "--video", "v.mp4", "--device", "cuda"], ["--device", "no CUDA device"]),
    (["train-ar", "--store", "s", "--out", "o", "--preset", "paper"], ["--preset", "CUDA preset needs a CUDA device"]),
])
def test_cli_cuda_without_cuda_is_one_line(no_gpu, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    _one_line_error(r, *words)
