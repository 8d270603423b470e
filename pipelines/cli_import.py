"""``pointillist import``: VHAP trackings and GaussianAvatars avatars as a run's stage outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import FLAME_OPT, app, console
from .command_configs import ImportJob
from .config_cli import config_command, own_fields


@config_command(app, "import", ImportJob, exclude=("src", "flame"), fields_from=own_fields("src", "flame"))
def import_cmd(cfg: ImportJob,
               src: Path = typer.Argument(..., help="VHAP export folder (--from vhap) or GaussianAvatars output "
                                                    "folder (--from ga)."),
               flame: Path | None = FLAME_OPT) -> None:
    """Import a VHAP tracking (replaces landmarks + track) or a GaussianAvatars avatar (replaces
    landmarks + track + fit) so that `pointillist run` continues from there."""
    from pipelines.importers import import_participant
    from pointillist_data.flame import resolve_flame_asset

    asset = resolve_flame_asset(cfg.flame)
    console.print(f"importing {cfg.src} ({cfg.source}) ...")
    recs = import_participant(cfg.source, cfg.src, cfg.out, cfg.participant, asset, **cfg.options())
    for stage, rec in recs.items():
        shown = {k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}  # not every timestep id
        console.print(f"{cfg.participant:03d} {stage}: imported -> [bold]{rec['output_dir']}[/] {shown}")
    console.print(f"next: pointillist run --out {cfg.out} --participants {cfg.participant} --capture ... "
                  f"(skips {', '.join(recs)})")
