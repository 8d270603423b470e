"""``pointillist import``: VHAP trackings and GaussianAvatars avatars as a run's stage outputs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .app import FLAME_OPT, app, console


class ImportSource(str, Enum):
    """Upstream projects whose outputs can be imported."""

    vhap = "vhap"
    ga = "ga"


@app.command("import")
def import_cmd(src: Path = typer.Argument(..., help="VHAP export folder (--from vhap) or GaussianAvatars output "
                                                    "folder (--from ga)."),
               source: ImportSource = typer.Option(..., "--from", help="VHAP tracking or GaussianAvatars avatar."),
               out: str = typer.Option(..., "--out", help="Run output folder or URL (as for pointillist run)."),
               participant: int = typer.Option(..., "--participant", help="Participant id the files belong to."),
               tracking: Path | None = typer.Option(None, "--tracking", help="vhap: VHAP's tracking output folder "
                                                    "or tracked_flame_params_<epoch>.npz (optional)."),
               epoch: int | None = typer.Option(None, "--epoch", help="vhap: epoch of the tracked parameters "
                                                "(default: the largest, as VHAP's exporter)."),
               iteration: int | None = typer.Option(None, "--iteration", help="ga: iteration_<N> to import "
                                                    "(default: the largest)."),
               ply_sh_degree: int | None = typer.Option(None, "--ply-sh-degree", help="ga: SH degree of the "
                                                        "written PLY (default: the imported one's)."),
               flame: Path | None = FLAME_OPT) -> None:
    """Import a VHAP tracking (replaces landmarks + track) or a GaussianAvatars avatar (replaces
    landmarks + track + fit) so that `pointillist run` continues from there."""
    from pipelines.importers import import_participant
    from pointillist_data.flame import resolve_flame_asset

    asset = resolve_flame_asset(flame)
    opts = {"tracking": tracking, "epoch": epoch} if source == ImportSource.vhap else \
        {"iteration": iteration, "ply_sh_degree": ply_sh_degree}
    console.print(f"importing {src} ({source.value}) ...")
    recs = import_participant(source.value, src, out, participant, asset, **opts)
    for stage, rec in recs.items():
        shown = {k: v for k, v in rec["metrics"].items() if not isinstance(v, list)}  # not every timestep id
        console.print(f"{participant:03d} {stage}: imported -> [bold]{rec['output_dir']}[/] {shown}")
    console.print(f"next: pointillist run --out {out} --participants {participant} --capture ... "
                  f"(skips {', '.join(recs)})")
