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


def test_every_config_field_of_every_config_command_is_a_flag():
    import dataclasses

    _, root, commands = _real()
    assert {"train-ar", "train-decoder", "generate-points", "avatar", "evaluate"} <= set(commands)
    for name, cls in commands.items():
        opts = {o for p in root.commands[name].params for o in p.opts}
        flags = {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(cls)}
        flags -= {"--decoder"} if name == "evaluate" else set()  # the repeatable own option (--ablation)
        assert flags - opts == set(), name
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
