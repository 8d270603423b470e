"""The command reference (``docs/CLI.md``), generated from the commands themselves.

Every option of every command comes from the command typer builds (the help record ``--help`` shows), so the options
generated from config dataclasses (:mod:`pipelines.config_cli`) and a command's own options
(inputs, outputs) are listed alike, with their help, choices and defaults. ``make docs``
rewrites the file; ``tests/test_cli_reference.py`` fails when it is out of date::

    python -m pipelines.cli_reference --write docs/CLI.md
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["command_reference", "main"]

_HEADER = """# Command reference

Generated from the commands by `make docs` (`python -m pipelines.cli_reference --write docs/CLI.md`);
a test fails when it is out of date. Every command built from a config dataclass also takes
`--config FILE` (a JSON object of the same fields; nested configs as nested objects) and
`--print-config` (the resolved config, a file to start from). One precedence rule:
field defaults < preset (`--cuda-preset` / `--device`, where a command has one) < `--config FILE`
< explicit flags.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_row(p, ctx) -> str:
    """One table row from the help record typer shows in ``--help`` (the same text)."""
    record = p.get_help_record(ctx) if hasattr(p, "get_help_record") else None
    if record is None:  # an argument
        decl, help_ = f"{p.name.upper()} (argument)", getattr(p, "help", "") or ""
    else:
        decl, help_ = record
    return f"| `{_cell(decl)}` | {_cell(help_)} |"


def _command_section(path: str, cmd, ctx) -> list[str]:
    lines = [f"## `pointillist {path}`", ""]
    doc = (cmd.help or "").strip()
    if doc:
        lines += [" ".join(doc.split("\n\n")[0].split()), ""]
    params = [p for p in cmd.params if p.name != "help"]
    if params:
        lines += ["| option | help |", "| --- | --- |"]
        lines += [_option_row(p, ctx) for p in params]
        lines.append("")
    return lines


def command_reference() -> str:
    """The Markdown command reference of the ``pointillist`` CLI, in the help's panel order."""
    import typer

    from pipelines.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("pointillist", [], resilient_parsing=True)
    out = [_HEADER]
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        sub_ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        if hasattr(cmd, "list_commands"):  # a group (``flame``): one section per subcommand
            for sub in cmd.list_commands(sub_ctx):
                leaf = cmd.get_command(sub_ctx, sub)
                leaf_ctx = leaf.make_context(sub, [], parent=sub_ctx, resilient_parsing=True)
                out += _command_section(f"{name} {sub}", leaf, leaf_ctx)
        else:
            out += _command_section(name, cmd, sub_ctx)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """``--write FILE`` writes the reference (atomically); without it, prints it."""
    argv = sys.argv[1:] if argv is None else argv
    text = command_reference()
    if argv[:1] == ["--write"] and len(argv) == 2:
        from pointillist_data.fileio import atomic_write_text

        atomic_write_text(Path(argv[1]), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
