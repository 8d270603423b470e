"""The typer application shared by the CLI modules."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="pointillist: regenerate AvatarPointillist-style tokenized Gaussian head-avatar datasets.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()

FLAME_OPT = typer.Option(None, "--flame", envvar="POINTILLIST_FLAME_MODEL",
                         help="FLAME model .pkl/.npz (FLAME 2020/2023). Default: the built-in demo head.")
