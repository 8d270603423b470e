"""The ``pointillist`` command line: one typer app, one subcommand per stage.

Stage modules are imported inside each command so that ``pointillist --help`` stays fast
and a missing optional extra only affects the command that needs it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import FLAME_OPT, app, command_order, console, sub_app
from .command_configs import DemoCaptureJob, DemoJob, FlameBuildDemoJob, FlameInfoJob, FlamePreviewJob
from .config_cli import config_command, own_fields
from .tables import print_table

flame_app = sub_app(help="Inspect and preview FLAME model files (real or the demo head).")
app.add_typer(flame_app, name="flame", rich_help_panel="Utilities")


@config_command(flame_app, "info", FlameInfoJob, exclude=("path",), fields_from=own_fields("path"))
def flame_info(cfg: FlameInfoJob,
               path: Path | None = typer.Argument(None, help="FLAME file; default: the demo head.")) -> None:
    """Print vertices, faces, joints, parameter sizes, landmark sets and the licence note."""
    from pointillist_data.flame import resolve_flame_asset

    path = cfg.path
    a = resolve_flame_asset(path)
    t = Table(title=f"FLAME asset: {a.meta.get('source', path)}")
    t.add_column("property")
    t.add_column("value")
    rows = [
        ("vertices", str(a.num_vertices)), ("faces", str(a.num_faces)), ("joints", str(a.num_joints)),
        ("identity (shape) directions", str(a.n_shape)), ("expression directions", str(a.n_expr)),
        ("pose correctives", f"{a.posedirs.shape[0]} (all zero)" if not a.posedirs.any() else str(a.posedirs.shape[0])),
        ("teeth", "yes" if a.teeth else "no"),
        ("landmark sets", ", ".join(f"{k} ({len(v)})" for k, v in sorted(a.landmarks.items())) or "none"),
        ("demo head", "yes" if a.is_demo else "no"),
        ("licence", a.meta.get("licence", "see the FLAME licence of the file's provider")),
    ]
    for r in rows:
        t.add_row(*r)
    print_table(console, t)
    if a.is_demo:
        console.print("[yellow]The demo head serves demos and tests; it is no substitute for FLAME in research.[/]")


@config_command(flame_app, "preview", FlamePreviewJob, exclude=("path",), fields_from=own_fields("path"))
def flame_preview(cfg: FlamePreviewJob,
                  path: Path | None = typer.Argument(None, help="FLAME file; default: the demo head.")) -> None:
    """Render the mesh neutral and in a few expressions and poses to a PNG."""
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.flame.preview import render_preview

    p = render_preview(resolve_flame_asset(cfg.path), Path(cfg.out), size=cfg.size)
    console.print(f"preview written to [bold]{p}[/]")


@config_command(flame_app, "build-demo", FlameBuildDemoJob)
def flame_build_demo(cfg: FlameBuildDemoJob) -> None:
    """Build the demo head (FLAME 2023 Open topology, procedural rigging) into a FLAME-format .npz."""
    from pointillist_data.flame import build_demo_asset, save_flame_asset

    out = Path(cfg.out)
    a = build_demo_asset(cfg.seed)
    save_flame_asset(a, out)
    console.print(f"demo head ({a.num_vertices} vertices, {a.num_faces} faces) written to [bold]{out}[/]")


@config_command(app, "demo-capture", DemoCaptureJob, exclude=("flame",), fields_from=own_fields("flame"))
def demo_capture(cfg: DemoCaptureJob, flame: Path | None = FLAME_OPT) -> None:
    """Render the synthetic capture (the embedded default) in the NeRSemble v2 layout, with ground truth."""
    from pointillist_data.capture.synthetic import make_synthetic_capture
    from pointillist_data.flame import resolve_flame_asset

    out, timesteps = Path(cfg.out), cfg.timesteps
    with console.status("rendering the synthetic capture"):
        s = make_synthetic_capture(out, cfg.capture_config(), resolve_flame_asset(cfg.flame),
                                   progress=lambda pid: console.print(f"participant {pid:03d} written"))
    w, h = s["image_size"]
    console.print(f"synthetic capture: {len(s['participants'])} participant(s), 16 cameras at {w}x{h}, "
                  f"{timesteps} timesteps -> [bold]{out}[/]")


@config_command(app, "demo", DemoJob, exclude=("flame",), fields_from=own_fields("flame"))
def demo(cfg: DemoJob, flame: Path | None = FLAME_OPT) -> None:
    """Run the end-to-end demo on the embedded default (the demo head)."""
    from pipelines.demo import run_demo

    run_demo(Path(cfg.out), cfg.flame, cfg.identities, cfg.timesteps, cfg.train_steps)


# the other command groups register themselves on the shared app
from . import (  # noqa: E402,F401
    cli_animate,
    cli_avatar,
    cli_data,
    cli_evaluate,
    cli_experiment,
    cli_import,
    cli_model,
    cli_pipeline,
    cli_render,
    cli_stages,
)

# the help lists commands in pipeline order (app.COMMAND_PANELS), not in import order
app.registered_commands.sort(key=lambda c: command_order(c.name))
app.registered_groups.sort(key=lambda g: command_order(g.name))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
