"""``pointillist render``: a fitted or imported avatar rendered for chosen cameras, timesteps or a
motion (GaussianAvatars' ``render.py``); the rendering is :mod:`pointillist_data.render.fitted`."""

from __future__ import annotations

from pathlib import Path

from pointillist_data.render_config import RenderConfig

from .app import FLAME_OPT, app, console, err_console
from .config_cli import config_command


@config_command(app, "render", RenderConfig)
def render_cmd(cfg: RenderConfig, flame: Path | None = FLAME_OPT) -> None:
    """Render a fitted or imported avatar (point_cloud.ply + flame_param.npz, or a GaussianAvatars
    output folder) into an export's cameras or virtual ones, for its own timesteps or a --motion:
    PNG frames, one mp4 per camera and a labelled contact sheet."""
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_data.render.fitted import render_fitted

    asset = resolve_flame_asset(flame)
    with cli_progress(console) as progress:
        rec = render_fitted(cfg, asset, progress)
    out = Path(cfg.out)
    for w in rec["warnings"]:
        err_console.print(f"warning: {w}", markup=False, soft_wrap=True)
    console.print(f"{len(rec['cameras'])} camera(s) x {len(rec['timesteps'])} timestep(s) at {rec['size'][0]}x"
                  f"{rec['size'][1]} -> [bold]{out / 'frames'}[/]; sheet [bold]{out / rec['sheet']}[/]")
    for v in rec["videos"]:
        console.print(f"video: [bold]{out / v}[/]")
