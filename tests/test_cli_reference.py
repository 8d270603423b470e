"""``docs/CLI.md`` is the command reference generated from the commands (and so from the
configs their options come from): a changed option, help text or new command without
``make docs`` fails here. The reference is checked against the commands themselves too,
independently of the generator: every command and every option of ``--help`` appears."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cli_reference import command_reference

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CLI.md"


def test_reference_is_up_to_date():
    assert DOC.is_file(), "docs/CLI.md missing: run `make docs`"
    assert DOC.read_text() == command_reference(), "docs/CLI.md is out of date: run `make docs`"


def _help(args: list[str]) -> str:
    return CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "250"}).output


def _command_paths(args: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command, read from the help's command panels (a group's help lists its own)."""
    names = re.findall(r"^│ ([a-z][a-z-]+) {2,}", _help(list(args)), flags=re.M)
    if not names:
        return [args]
    return [p for n in names for p in _command_paths((*args, n))]


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_option_of_help_is_in_the_reference(path):
    """Every option ``pointillist <command> --help`` lists has a row in the command's section
    (the help is read as a user reads it, not through the generator)."""
    text = DOC.read_text()
    title = f"## `pointillist {' '.join(path)}`\n"
    assert title in text, f"no section for {' '.join(path)}"
    body = text.split(title, 1)[1].split("\n## ", 1)[0]
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9.-]*[a-z0-9])", _help(list(path)))) - {"--help"}
    assert "Usage:" in _help(list(path))
    missing = sorted(f for f in flags if f"`{f}" not in body and f" {f}" not in body and f"/{f}" not in body)
    assert not missing, f"{' '.join(path)}: {missing} in --help but not in docs/CLI.md"
