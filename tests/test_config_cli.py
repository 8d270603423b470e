"""Options generated from config dataclasses (pipelines/config_cli.py): every field settable
from the command line with its docstring as help, nested configs as dotted flags, enums and
literals as choices, one precedence rule (defaults < preset < --config < flags), and
``--print-config`` giving back a file that reproduces the same config."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

import pipelines.app  # noqa: F401  (installs the help tweaks of the real command line)
from pipelines.config_cli import config_command, config_flags, field_help
from pointillist_data.errors import ConfigError


class Mode(str, enum.Enum):
    fast = "fast"
    exact = "exact"


@dataclass
class Inner:
    """Nested settings.

    Attributes:
        iterations: optimisation steps.
        rate: learning rate.
    """

    iterations: int = 10
    rate: float = 0.5


@dataclass
class Job:
    """A job.

    Attributes:
        name: what the job is called, on a line that
            goes on here.
        lo, hi: the range (lo <= hi).
        mode: how.
        device: where it runs.
        verbose: say more.
        cameras: camera serials.
        shape: extra JSON.
        inner: nested settings.
    """

    name: str = "job"
    lo: int = 0
    hi: int = 5
    mode: Mode = Mode.fast
    device: Literal["cpu", "cuda"] = "cpu"
    verbose: bool = False
    cameras: list[str] | None = None
    shape: dict = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if isinstance(self.inner, dict):
            self.inner = Inner(**self.inner)
        if self.lo > self.hi:
            raise ValueError(f"need lo <= hi, got lo={self.lo}, hi={self.hi}")


def _app(presets=None):
    app = typer.Typer()
    seen = {}

    @config_command(app, "job", Job, presets=presets)
    def job(cfg: Job, out: str = typer.Option("o", "--out")) -> None:
        seen["cfg"], seen["out"] = cfg, out

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer in multi-command mode
        pass

    return app, seen


def test_field_help_reads_grouped_and_continued_entries():
    h = field_help(Job)
    assert h["name"] == "what the job is called, on a line that goes on here."
    assert h["lo"] == h["hi"] == "the range (lo <= hi)."
    assert field_help(Inner) == {"iterations": "optimisation steps.", "rate": "learning rate."}


def test_every_field_is_a_flag_with_its_help():
    flags = {f.flag: f for f in config_flags(Job)}
    assert set(flags) == {"--name", "--lo", "--hi", "--mode", "--device", "--verbose", "--cameras", "--shape",
                          "--inner.iterations", "--inner.rate"}
    assert flags["--mode"].choices == ("fast", "exact") and flags["--device"].choices == ("cpu", "cuda")
    app, _ = _app()
    out = CliRunner().invoke(app, ["job", "--help"], env={"COLUMNS": "200"}).output
    for f in flags:
        assert f in out
    assert "optimisation steps." in out and "--no-verbose" in out and "<bool>" not in out


def test_precedence_defaults_preset_file_flags(tmp_path):
    app, seen = _app(presets=lambda: {"lo": 1, "hi": 9, "name": "preset"})
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"hi": 7, "name": "file", "inner": {"rate": 0.25}}))
    r = CliRunner().invoke(app, ["job", "--config", str(cfg_file), "--name", "flag", "--inner.iterations", "3",
                                 "--mode", "exact", "--cameras", "a,b", "--verbose", "--shape", '{"k": 1}'])
    assert r.exit_code == 0, r.output
    c = seen["cfg"]
    assert (c.name, c.lo, c.hi) == ("flag", 1, 7)  # flag > file > preset
    assert (c.inner.iterations, c.inner.rate) == (3, 0.25)  # nested: flag and file merged per field
    assert c.mode == "exact" and c.cameras == ["a", "b"] and c.verbose is True and c.shape == {"k": 1}
    assert seen["out"] == "o"


def test_print_config_round_trips(tmp_path):
    app, seen = _app()
    r = CliRunner().invoke(app, ["job", "--hi", "8", "--inner.rate", "0.125", "--print-config"])
    assert r.exit_code == 0 and "cfg" not in seen
    doc = json.loads(r.output)
    assert doc["hi"] == 8 and doc["inner"] == {"iterations": 10, "rate": 0.125}
    (tmp_path / "c.json").write_text(r.output)
    r = CliRunner().invoke(app, ["job", "--config", str(tmp_path / "c.json")])
    assert r.exit_code == 0 and seen["cfg"] == Job(hi=8, inner=Inner(rate=0.125))


def test_errors_name_the_flag_or_the_file(tmp_path):
    from pipelines.app import domain_errors  # noqa: F401 (the CLI maps ConfigError to exit 2)

    app, _ = _app()
    with pytest.raises(ConfigError, match=r"^--lo: .*need lo <= hi"):
        CliRunner().invoke(app, ["job", "--lo", "9"], catch_exceptions=False)
    (tmp_path / "bad.json").write_text(json.dumps({"lo": 9}))
    with pytest.raises(ConfigError, match=r"bad\.json: .*need lo <= hi"):
        CliRunner().invoke(app, ["job", "--config", str(tmp_path / "bad.json")], catch_exceptions=False)
    r = CliRunner().invoke(app, ["job", "--mode", "slow"])
    assert r.exit_code == 2 and "slow" in r.output


# ---------------------------------------------------------------------------- the real commands
REQUIRED = {"store": "s/store.zarr", "out": "o", "decoder": "d.pt", "ar_checkpoint": "a.pt"}
OWN = {"generate-points": ["--image", "p.png", "--checkpoint", "a.pt", "--out", "o"],
       "avatar": ["--image", "p.png", "--checkpoint", "d.pt", "--out", "o"], "train-decoder": ["--w-lpips", "0"]}


def _real():
    from typer.main import get_command

    from pipelines.cli import app
    from pipelines.config_cli import CONFIG_COMMANDS

    root = get_command(app)
    return app, root, {n: c for n, c in CONFIG_COMMANDS.items() if n in root.commands}


def _leaf_fields(cls: type, prefix: tuple[str, ...] = (), fixed: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every settable field of a config, walked from ``dataclasses.fields`` (nested configs and
    ``overrides`` dicts of another config's fields descended into, less the ``fixed`` fields the
    command sets itself), as field paths."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in (f for f in dataclasses.fields(cls) if f.init and f.name not in fixed):  # derived: no input
        tp = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name]) \
            if type(None) in typing.get_args(hints[f.name]) else hints[f.name]
        inner = tp if dataclasses.is_dataclass(tp) else f.metadata.get("overrides")
        out += _leaf_fields(inner, (*prefix, f.name), tuple(f.metadata.get("fixed", ()))) if inner \
            else [(*prefix, f.name)]
    return out


def test_every_config_field_of_every_config_command_is_a_flag():
    _, root, commands = _real()
    assert {"train-ar", "train-decoder", "generate-points", "avatar", "evaluate", "landmarks", "track", "fit",
            "canonicalize", "tokenize", "supervise", "shard"} <= set(commands)
    for name, cls in commands.items():
        opts = {o for p in root.commands[name].params for o in p.opts}
        # a field a command sets from an own option or argument of the same name (evaluate's
        # repeatable --decoder, run's --flame with its environment variable, import's SRC) is
        # reachable all the same
        own = {p.name for p in root.commands[name].params}
        generated = {f.path: f.flag for f in config_flags(cls)}
        for path in _leaf_fields(cls):
            flag = generated.get(path, "--" + ".".join(p.replace("_", "-") for p in path))
            assert flag in opts or (len(path) == 1 and path[0] in own), (name, path)
        assert {"--config", "--print-config"} <= opts and ("--decoder" in opts or name != "evaluate")


@pytest.mark.parametrize("name", ["train-ar", "train-decoder", "generate-points", "avatar", "evaluate"])
def test_config_file_then_flag_resolve_the_same_way_on_every_command(name, tmp_path):
    """One precedence rule: the file's value beats the default, an explicit flag beats the file."""
    import dataclasses

    app, _, commands = _real()
    cls = commands[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    required = [x for k, v in REQUIRED.items() if k in fields for x in (f"--{k.replace('_', '-')}", v)]
    if name == "evaluate":
        required = [x for x in required if x not in ("--decoder", "d.pt")] + ["--decoder", "d.pt"]
    required += OWN.get(name, [])
    (tmp_path / "c.json").write_text(json.dumps({"seed": 7, "max_points" if "max_points" in fields else "steps": 11,
                                                                                          }))
    run = CliRunner()
    doc = json.loads(run.invoke(app, [name, *required, "--print-config"]).output)
    assert doc["seed"] == 0
    doc = json.loads(run.invoke(app, [name, *required, "--config", str(tmp_path / "c.json"), "--print-config"]).output)
    assert doc["seed"] == 7 and doc.get("max_points", doc.get("steps")) == 11
    r = run.invoke(app, [name, *required, "--config", str(tmp_path / "c.json"), "--seed", "3", "--print-config"])
    doc = json.loads(r.output)
    assert doc["seed"] == 3 and doc.get("max_points", doc.get("steps")) == 11


def test_model_config_choices_match_the_networks():
    from pointillist_data.animation import MODES
    from pointillist_model import config
    from pointillist_model.ar import PRESETS
    from pointillist_model.decoder import DECODER_PRESETS

    assert set(config.MODEL_PRESETS) == set(PRESETS) | {"auto"} == set(DECODER_PRESETS) | {"auto"}
    assert config.ANIMATION_MODES == MODES


# ---------------------------------------------------------------------------- the data-stage commands
# each command's required inputs, then (field, value in the file, value of the flag, default)
STAGES = {
    "landmarks": (["--capture", "c", "--participant", "17", "--out", "o"], ("frames", "0:4", "0:2", "all")),
    "track": (["--out", "o", "--video", "v.mp4"], ("global_iters", 7, 3, 100)),
    "fit": (["--tracking", "t", "--out", "o"], ("iterations", 7, 3, 500)),
    "canonicalize": (["--fit", "f", "--out", "o/canonical.npz"], ("out", "file.npz", "flag.npz", None)),
    "tokenize": (["--canonical", "c.npz", "--subject", "017", "--out", "s.npz", "--image", "p.png"],
                 ("image_size", 32, 16, 512)),
    "supervise": (["--capture", "c", "--participant", "17", "--tracking", "t", "--out", "s.npz"],
                  ("timesteps", 3, 2, 16)),
    "shard": (["s.npz", "--out", "store.zarr"], ("tokens_per_shard", 8192, 4096, 1 << 21)),
}


def _print(app, *args) -> dict:
    r = CliRunner().invoke(app, [*map(str, args), "--print-config"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_command_file_then_flag_and_print_config_round_trip(name, tmp_path, no_cuda):
    """defaults < --config FILE < explicit flag on every data-stage command, and the printed
    config, given back as --config (without any other flag), resolves to itself."""
    app, _, _ = _real()
    required, (fld, in_file, in_flag, default) = STAGES[name]
    flag = "--" + fld.replace("_", "-")
    doc = _print(app, name, *required)
    if default is not None:
        assert doc[fld] == default
    (tmp_path / "c.json").write_text(json.dumps({fld: in_file}))
    assert _print(app, name, *required, "--config", tmp_path / "c.json")[fld] == (in_file if default is not None
                                                                                 else "o/canonical.npz")
    doc = _print(app, name, *required, "--config", tmp_path / "c.json", flag, in_flag)
    assert doc[fld] == in_flag
    (tmp_path / "printed.json").write_text(json.dumps(doc))
    positional = [a for a in required if a.endswith(".npz") and name == "shard"]
    assert _print(app, name, *positional, "--config", tmp_path / "printed.json") == doc


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees one CUDA device (named, never used: only configs are resolved)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake H100")


def test_fit_cuda_preset_composes_with_the_config_file(fake_cuda, tmp_path):
    """Issue 25: `fit --cuda-preset` was ignored when --config was given. The preset is now one
    more layer: preset < file < flags."""
    from pointillist_data.fitting.config import cuda_defaults

    app, _, _ = _real()
    (tmp_path / "f.json").write_text(json.dumps({"seed": 5, "log_every": 7}))
    doc = _print(app, "fit", "--tracking", "t", "--out", "o", "--cuda-preset", "--device", "cuda",
                 "--config", tmp_path / "f.json", "--iterations", 9)
    upstream = cuda_defaults()
    assert (doc["seed"], doc["log_every"], doc["iterations"]) == (5, 7, 9)  # file, file, flag
    assert doc["sh_degree"] == 3 and doc["lr_feature"] == upstream.lr_feature == 0.0025  # the preset under them
    assert doc["densify_every"] == pytest.approx(2_000 / 600_000) and doc["device"] == "cuda"
    doc = _print(app, "fit", "--tracking", "t", "--out", "o", "--cuda-preset", "--config", tmp_path / "f.json")
    assert doc["iterations"] == 600_000 and doc["seed"] == 5


def test_device_flag_beats_the_device_of_the_config_file(fake_cuda, tmp_path):
    """One precedence rule for the device too (a file's device used to win over --device)."""
    from pointillist_data.fitting.config import FittingConfig

    app, _, _ = _real()
    (tmp_path / "f.json").write_text(json.dumps({"device": "cuda", "seed": 2}))
    doc = _print(app, "fit", "--tracking", "t", "--out", "o", "--config", tmp_path / "f.json", "--device", "cpu")
    assert doc["device"] == "cpu" and doc["iterations"] == FittingConfig().iterations and doc["seed"] == 2
    doc = _print(app, "fit", "--tracking", "t", "--out", "o", "--config", tmp_path / "f.json")
    assert doc["device"] == "cuda" and doc["iterations"] == 600_000  # the file's device picks the budget
    doc = _print(app, "track", "--out", "o", "--video", "v.mp4")  # auto on a GPU: the CUDA preset
    assert doc["device"] == "cuda" and doc["global_iters"] == 3000


def test_track_image_keeps_its_budget_under_a_config_file(no_cuda, tmp_path):
    from pointillist_data.tracking.single_image import SINGLE_IMAGE_CONFIG

    app, _, _ = _real()
    (tmp_path / "t.json").write_text(json.dumps({"global_iters": 9}))
    doc = _print(app, "track", "--out", "o", "--image", "p.png", "--config", tmp_path / "t.json", "--iters", "5,6,7")
    assert doc["global_iters"] == 7 and doc["first_frame_iters"] == 5  # --iters is three explicit flags
    assert (doc["render_cameras"], doc["optimize_focal"], doc["w_pose"]) == (
        SINGLE_IMAGE_CONFIG.render_cameras, True, SINGLE_IMAGE_CONFIG.w_pose) == (0, True, 0.2)
    doc = _print(app, "track", "--out", "o", "--video", "v.mp4", "--config", tmp_path / "t.json")
    assert doc["global_iters"] == 9 and doc["render_cameras"] == 3  # the CPU preset under the file


def _stderr(r) -> str:
    try:
        return r.stderr or r.output
    except ValueError:
        return r.output


@pytest.mark.parametrize("args,named", [
    (["track", "--out", "o", "--video", "v.mp4", "--device", "gpu"], "'--device'"),
    (["fit", "--tracking", "t", "--out", "o", "--device", "gpu"], "'--device'"),
    (["track", "--out", "o", "--video", "v.mp4", "--focal", "-3"], "error: --focal:"),
    (["track", "--out", "o", "--video", "v.mp4", "--image", "p.png"], "error: --video / --image:"),
    (["track", "--out", "o", "--capture", "c"], "error: --participant / --landmarks: required"),
    (["track", "--out", "o", "--video", "v.mp4", "--crop", "5,5,1,1"], "error: --crop:"),
    (["landmarks", "--capture", "c", "--participant", "1", "--out", "o", "--detector", "files"], "error: --from-dir:"),
    (["tokenize", "--canonical", "c", "--subject", "1", "--out", "o", "--image", "p", "--image-size", "4"],
     "error: --image-size:"),
    (["tokenize", "--canonical", "c", "--subject", "1", "--out", "o"], "error: --image: give a portrait"),
    (["shard", "s.npz", "--out", "o", "--box", "1,2"], "error: --box:"),
    (["shard", "s.npz", "--out", "o", "--tokens-per-shard", "10"], "error: --tokens-per-shard:"),
    (["supervise", "--capture", "c", "--participant", "1", "--tracking", "t", "--out", "o", "--resolution", "4,4"],
     "error: --resolution:"),
    (["fit", "--tracking", "t", "--out", "o", "--scale", "2"], "error: --scale:"),
])
def test_stage_command_errors_name_the_option(args, named, no_cuda):
    app, _, _ = _real()
    r = CliRunner().invoke(app, [*args, "--print-config"])
    assert r.exit_code == 2 and "Traceback" not in _stderr(r), _stderr(r)
    assert named in " ".join(_stderr(r).split()), _stderr(r)


def test_supervise_command_writes_what_the_run_stage_writes(synthetic_capture, tmp_path):
    """`pointillist supervise` and `run`'s supervise stage call one stage function: the same
    supervision.npz, holding the tracked parameters it was given."""
    import numpy as np

    from pipelines.stage_supervise import run_supervise
    from pipelines.stages import PipelineConfig
    from pointillist_data.flame import FlameParams
    from pointillist_data.store.supervision import SupervisionSample

    root, cfg, _ = synthetic_capture
    pid, seq = cfg.participants[0], cfg.sequence
    tracked = FlameParams.load(root / f"{pid:03d}/ground_truth/{seq}/flame_params.npz").frame(slice(1, 3))
    tracked.timestep_id = np.array(["00001", "00002"])  # as if the tracker kept frames 1 and 2
    (tmp_path / "track").mkdir()
    tracked.save(tmp_path / "track" / "tracked_flame_params_30.npz")
    app, _, _ = _real()
    r = CliRunner().invoke(app, ["supervise", "--capture", str(root), "--participant", str(pid), "--sequence", seq,
                                 "--tracking", str(tmp_path / "track"), "--out", str(tmp_path / "cmd" / "s.npz"),
                                 "--timesteps", "2", "--crops", "2", "--crop-size", "40"])
    assert r.exit_code == 0, _stderr(r)
    (tmp_path / "run").mkdir()
    pc = PipelineConfig(capture=str(root), out=str(tmp_path / "o"), participants=[pid], sequences=[seq],
                        image_size=40, supervision={"timesteps": 2, "crops": 2})
    run_supervise(pc, pid, {"track": tmp_path / "track"}, tmp_path / "run", None)
    a, b = SupervisionSample.load(tmp_path / "cmd" / "s.npz"), SupervisionSample.load(tmp_path / "run" / "supervision.npz")
    assert a.rgb.shape[:2] == (2, 16) and a.crops.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(a.params.expr, tracked.expr)
    for k in ("rgb", "mask", "intrinsics", "world_to_cam", "crops"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


# ---------------------------------------------------------------------------- every command at once
# the precedence cases of the commands not in the tables above: (own inputs, field, file value, flag value)
OTHERS = {
    "animate": (["--avatar", "a", "--motion", "m.npz"], "fps", 12, 30),
    "render": (["--fit", "f", "--out", "o"], "views", 3, 2),
    "experiment": ([], "nll_every", 50, 60),
}


def _leaf_commands(cmd, path=()) -> list[str]:
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [" ".join(path)]
    return [leaf for name, sub in subs.items() for leaf in _leaf_commands(sub, (*path, name))]


def test_every_command_is_built_from_one_config_and_its_precedence_is_tested():
    """Walks the whole command tree: each command's options come from a config dataclass
    (``--config`` / ``--print-config`` present, the class registered), and each has a
    defaults < file < flag case in one of this suite's tables (a new command without one fails)."""
    from test_command_configs import CASES

    _, root, _ = _real()
    from pipelines.config_cli import CONFIG_COMMANDS

    leaves = _leaf_commands(root)
    assert len(leaves) >= 25
    tested = set(STAGES) | set(CASES) | set(OTHERS) | {"train-ar", "train-decoder", "generate-points", "avatar",
                                                         "evaluate"}
    for leaf in leaves:
        cmd = root
        for part in leaf.split():
            cmd = cmd.commands[part]
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"--config", "--print-config"} <= opts, leaf
        assert leaf.split()[-1] in CONFIG_COMMANDS, leaf
        assert leaf in tested, f"{leaf}: no precedence case"


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_config_file_then_flag_on_the_remaining_commands(name, tmp_path):
    from pipelines.cli import app

    own, field, in_file, in_flag = OTHERS[name]
    (tmp_path / "c.json").write_text(json.dumps({field: in_file}))
    flag = "--" + field.replace("_", "-")
    default = _print(app, name, *own)[field]
    assert default not in (in_file, in_flag)
    assert _print(app, name, *own, "--config", tmp_path / "c.json")[field] == in_file
    assert _print(app, name, *own, "--config", tmp_path / "c.json", flag, in_flag)[field] == in_flag
