"""The commands of the "Run and status" and "Utilities" panels built from one config each
(issue 25, part B): every field of ``run`` (PipelineConfig, with TrackingConfig / FittingConfig
fields as dotted flags), ``status``, ``import``, ``validate``, ``inspect``, ``split``, ``demo``,
``demo-capture`` and ``flame info`` / ``preview`` / ``build-demo`` is reachable from the command
line; one precedence rule, defaults < --config FILE < explicit flags (``run`` let the file win
before); ``--print-config`` gives back a file that reproduces the same config; errors name the
user's flag."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.command_configs import DemoCaptureJob
from pipelines.config_cli import CONFIG_COMMANDS
from pipelines.stages import PipelineConfig, stage_config
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.tracking.config import TrackingConfig

ROOT = get_command(app)
MINE = ["run", "status", "import", "validate", "inspect", "split", "demo", "demo-capture", "flame info",
        "flame preview", "flame build-demo"]

# per command: (required arguments, a --config file's values, explicit flags, what the flags set)
CASES = {
    "run": (["--capture", "{tmp}", "--out", "{tmp}/o", "--participants", "17"],
            {"frames": "0:2", "image_size": 64, "tracking": {"frame_iters": 5, "global_iters": 3}},
            ["--frames", "0:1", "--tracking.frame-iters", "7"],
            {"frames": "0:1", "image_size": 64, "tracking": {"frame_iters": 7, "global_iters": 3}}),
    "status": (["{tmp}/run"], {"store": "a.zarr"}, ["--store", "b.zarr"], {"store": "b.zarr"}),
    "import": (["{tmp}/export", "--from", "vhap", "--out", "{tmp}/o", "--participant", "3"], {"epoch": 1},
               ["--epoch", "2"], {"epoch": 2}),
    "validate": (["b.zarr"], {"store": "a.zarr"}, [], {"store": "b.zarr"}),
    "inspect": (["s.zarr"], {"sort": "points", "sample": 1}, ["--sort", "tokens"], {"sort": "tokens", "sample": 1}),
    "split": (["--nersemble", "{tmp}"], {"seed": 3, "n_test": 2}, ["--seed", "4"], {"seed": 4, "n_test": 2}),
    "demo": ([], {"train_steps": 5, "timesteps": 3}, ["--train-steps", "6"], {"train_steps": 6, "timesteps": 3}),
    "demo-capture": (["--out", "{tmp}/c"], {"seed": 1, "fps": 30}, ["--seed", "2"], {"seed": 2, "fps": 30}),
    "flame info": ([], {"path": "a.npz"}, ["b.npz"], {"path": "b.npz"}),
    "flame preview": ([], {"size": 64, "out": "x.png"}, ["--size", "32"], {"size": 32, "out": "x.png"}),
    "flame build-demo": (["--out", "{tmp}/h.npz"], {"seed": 1}, ["--seed", "2"], {"seed": 2}),
}


def _command(name: str):
    cmd = ROOT
    for part in name.split():
        cmd = cmd.commands[part]
    return cmd


def _invoke(name: str, *args: str):
    return CliRunner().invoke(app, [*name.split(), *args], catch_exceptions=False)


def _printed(name: str, *args: str) -> dict:
    r = _invoke(name, *args, "--print-config")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _args(name: str, tmp_path) -> list[str]:
    return [a.format(tmp=tmp_path) for a in CASES[name][0]]


@pytest.mark.parametrize("name", MINE)
def test_every_config_field_is_reachable_from_the_command_line(name):
    cls = CONFIG_COMMANDS[name.split()[-1]]
    params = _command(name).params
    opts = {o for p in params for o in p.opts}
    arguments = {p.name for p in params if p.param_type_name == "argument"}
    own_options = {p.name for p in params if p.param_type_name == "option"}
    missing = []
    for f in (f for f in dataclasses.fields(cls) if f.init):  # derived fields are no input
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("overrides"):  # run's tracking / fitting: one dotted flag per field
            missing += [g for g in (f"--{f.name}.{h.name.replace('_', '-')}" for h in
                                    dataclasses.fields(f.metadata["overrides"])) if g not in opts]
        elif flag not in opts and f.name not in arguments | own_options:
            missing.append(f.name)
    assert missing == [], f"{name}: fields without a flag or argument"
    assert {"--config", "--print-config"} <= opts


def test_run_sets_every_tracking_and_fitting_field():
    opts = {o for p in _command("run").params for o in p.opts}
    assert {f"--tracking.{f.name.replace('_', '-')}" for f in dataclasses.fields(TrackingConfig)} <= opts
    assert {f"--fitting.{f.name.replace('_', '-')}" for f in dataclasses.fields(FittingConfig)} <= opts
    assert {"--crop", "--sequence", "--sequences", "--supervision", "--device", "--deterministic"} <= opts


@pytest.mark.parametrize("name", MINE)
def test_config_file_then_explicit_flag_flag_wins(name, tmp_path):
    """defaults < --config FILE < explicit flags, on every command (``run`` took the file's
    value over an explicit option before)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "export").mkdir()
    _, from_file, flags, expected = CASES[name]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(from_file))
    required = _args(name, tmp_path)
    got = _printed(name, *required, "--config", str(cfg), *flags)
    assert {k: got[k] for k in expected} == expected
    if name == "validate":  # its one field is the required argument: always explicit
        return
    default = _printed(name, *required)
    assert all(default[k] != v for k, v in expected.items() if from_file.get(k) != v)  # set by the flag
    file_only = _printed(name, *required, "--config", str(cfg))
    assert {k: file_only[k] for k in from_file} == from_file


def test_run_flag_beats_config_file_for_the_run_itself(tmp_path):
    """The resolved config is what the run records: an explicit --frames beats the file's."""
    (tmp_path / "c.json").write_text(json.dumps({"frames": "0:2", "scale": "1/4", "device": "cpu"}))
    doc = _printed("run", "--capture", str(tmp_path), "--out", str(tmp_path / "o"), "--participants", "17,18",
                   "--config", str(tmp_path / "c.json"), "--frames", "0:1", "--scale", "1/2")
    assert (doc["frames"], doc["scale"], doc["device"], doc["participants"]) == ("0:1", 0.5, "cpu", [17, 18])


@pytest.mark.parametrize("name", MINE)
def test_print_config_round_trips(name, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "export").mkdir()
    _, _, flags, _ = CASES[name]
    required = _args(name, tmp_path)
    first = _printed(name, *required, *flags)
    (tmp_path / "resolved.json").write_text(json.dumps(first))
    again = _printed(name, *required, "--config", str(tmp_path / "resolved.json"))
    assert again == first


def test_run_participants_all_reads_the_capture_folder(tmp_path):
    for pid in ("017", "018", "notes"):
        (tmp_path / pid).mkdir()
    doc = _printed("run", "--capture", str(tmp_path), "--out", str(tmp_path / "o"))
    assert doc["participants"] == [17, 18]


@pytest.mark.parametrize("args,named", [
    (["--tracking.render-scale", "2"], "--tracking.render-scale: "),
    (["--fitting.iterations", "-3"], "--fitting.iterations"),
    (["--crop", "30,2,10,40"], "--crop: "),
    (["--scale", "3"], "--scale: "),
])
def test_run_errors_name_the_flag(args, named, tmp_path):
    r = CliRunner().invoke(app, ["run", "--capture", str(tmp_path), "--out", str(tmp_path / "o"), "--participants",
                                 "17", *args, "--print-config"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in (r.stderr if r.stderr_bytes is not None else r.output).splitlines() if ln.strip()]
    assert lines[0].startswith(f"error: {named}"), lines


def test_run_device_is_a_choice_and_cuda_n_comes_from_the_file(tmp_path):
    base = ["run", "--capture", str(tmp_path), "--out", str(tmp_path / "o"), "--participants", "17"]
    r = CliRunner().invoke(app, [*base, "--device", "gpu", "--print-config"])
    assert r.exit_code == 2 and "Invalid value" in r.output and "auto" in r.output
    (tmp_path / "c.json").write_text(json.dumps({"device": "cuda:1"}))
    assert _printed("run", *base[1:], "--config", str(tmp_path / "c.json"))["device"] == "cuda:1"
    (tmp_path / "c.json").write_text(json.dumps({"device": "gpu"}))
    r = CliRunner().invoke(app, [*base, "--config", str(tmp_path / "c.json"), "--print-config"])
    assert r.exit_code == 2 and "c.json" in r.output and "'gpu' is not auto, cpu, cuda or cuda:N" in r.output


def test_import_refuses_options_of_the_other_source(tmp_path):
    r = CliRunner().invoke(app, ["import", str(tmp_path), "--from", "vhap", "--out", str(tmp_path / "o"),
                                 "--participant", "3", "--iteration", "4"])
    assert r.exit_code == 2 and "error: --iteration: not an option of --from vhap" in r.output
    r = CliRunner().invoke(app, ["import", str(tmp_path), "--from", "vhap2", "--out", "o", "--participant", "3"])
    assert r.exit_code == 2 and "Invalid value" in r.output  # a closed set: offered as choices


def test_run_crop_keys_the_landmark_stage_only_when_given(tmp_path):
    base = dict(capture=str(tmp_path), out=str(tmp_path / "o"), participants=[17])
    plain = stage_config(PipelineConfig(**base), "landmarks")
    assert set(plain) == {"detector", "selection"}  # runs without --crop keep their keys
    cropped = stage_config(PipelineConfig(**base, crop=[0, 0, 64, 80]), "landmarks")
    assert cropped["crop"] == [0.0, 0.0, 64.0, 80.0] and stage_config(PipelineConfig(**base), "track") == \
        stage_config(PipelineConfig(**base, crop=[0, 0, 64, 80]), "track")


def test_demo_capture_job_is_the_synthetic_capture_config_plus_out_and_flame():
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig as FromRenderer
    from pointillist_data.capture.synthetic_config import SyntheticCaptureConfig

    assert FromRenderer is SyntheticCaptureConfig and issubclass(DemoCaptureJob, SyntheticCaptureConfig)
    mine = {f.name for f in dataclasses.fields(DemoCaptureJob) if f.init} - {"out", "flame"}
    assert mine == {f.name for f in dataclasses.fields(SyntheticCaptureConfig) if f.init}
    job = DemoCaptureJob(out="x", identities=2, seed=3, background="textured")
    cfg = job.capture_config()
    assert type(cfg) is SyntheticCaptureConfig
    assert (cfg.identities, cfg.seed, cfg.background, cfg.participants) == (2, 3, "textured", [900, 901])
    with pytest.raises(ValueError, match="odd frame size"):
        DemoCaptureJob(out="x", scale=0.0105)  # 23 x 34  # the capture's own validation runs for the job


def test_synthetic_frame_size_matches_nersemble():
    from pointillist_data.capture import nersemble, synthetic_config

    assert (synthetic_config._FULL_WIDTH, synthetic_config._FULL_HEIGHT) == (nersemble.FULL_WIDTH, nersemble.FULL_HEIGHT)
