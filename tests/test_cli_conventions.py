"""Command-line conventions a user expects of every command: ``-h`` and ``--version``, commands
in pipeline-order help panels, a help text for every option, no value placeholder on on/off
flags, and closed sets offered as choices."""

from __future__ import annotations

import importlib.metadata

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pipelines.app import COMMAND_PANELS
from pipelines.cli import app

ROOT = get_command(app)


def _commands() -> dict:
    out = {}
    for name, cmd in ROOT.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


def test_version_and_short_help():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"pointillist {importlib.metadata.version('pointillist')}"
    r = CliRunner().invoke(app, ["-h"])
    assert r.exit_code == 0 and "Usage" in r.output
    r = CliRunner().invoke(app, ["fit", "-h"])
    assert r.exit_code == 0 and "--tracking" in r.output


def test_every_command_sits_in_a_panel_in_pipeline_order():
    listed = [c for cs in COMMAND_PANELS.values() for c in cs]
    assert sorted(ROOT.commands) == sorted(listed)
    out = CliRunner().invoke(app, ["-h"], env={"COLUMNS": "120"}).output
    panels = list(COMMAND_PANELS)
    assert [out.index(p) for p in panels] == sorted(out.index(p) for p in panels)
    assert out.index(" landmarks ") < out.index(" track ") < out.index(" fit ") < out.index(" tokenize ")


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_has_help_and_flags_show_no_placeholder(name):
    cmd = _commands()[name]
    no_help = [p.opts[0] for p in cmd.params if p.param_type_name == "option" and not (p.help or "").strip()]
    assert no_help == [], f"{name}: options without help"
    out = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"}).output
    assert "<bool>" not in out



def test_help_joins_wrapped_lines_and_keeps_placeholders():
    """Help renders docstrings as Markdown: wrapped lines join into one paragraph, and ``<...>``
    placeholders of file names survive (outside and inside code spans)."""
    out = CliRunner().invoke(app, ["track", "--help"], env={"COLUMNS": "300"}).output
    assert "tracked_flame_params_<epoch>.npz and the NeRF-style export: several sequences" in out
    out = CliRunner().invoke(app, ["landmarks", "--help"], env={"COLUMNS": "300"}).output
    assert "<sequence>/<serial>.npz" in out and "\\<" not in out
    out = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "300"}).output
    assert "<out>/ar_features" in out and "\\<" not in out
