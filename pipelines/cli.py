"""The ``pointillist`` command line: one typer app, one subcommand per stage.

Stage modules are imported inside each command so that ``pointillist --help`` stays fast
and a missing optional extra only affects the command that needs it.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import FLAME_OPT, app, command_order, console, sub_app

flame_app = sub_app(help="Inspect and preview FLAME model files (real or the demo head).")
app.add_typer(flame_app, name="flame", rich_help_panel="Utilities")


@flame_app.command("info")
def flame_info(path: Path | None = typer.Argument(None, help="FLAME file; default: the demo head.")) -> None:
    """Print vertices, faces, joints, parameter sizes, landmark sets and the licence note."""
    from pointillist_data.flame import resolve_flame_asset

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
    console.print(t)
    if a.is_demo:
        console.print("[yellow]The demo head serves demos and tests; it is no substitute for FLAME in research.[/]")


@flame_app.command("preview")
def flame_preview(path: Path | None = typer.Argument(None, help="FLAME file; default: the demo head."),
                  out: Path = typer.Option(Path("head.png"), "--out", help="PNG to write."),
                  size: int = typer.Option(256, help="Panel size in pixels.")) -> None:
    """Render the mesh neutral and in a few expressions and poses to a PNG."""
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.flame.preview import render_preview

    p = render_preview(resolve_flame_asset(path), out, size=size)
    console.print(f"preview written to [bold]{p}[/]")


@flame_app.command("build-demo")
def flame_build_demo(out: Path = typer.Option(..., "--out", help="Asset .npz to write."),
                     seed: int = typer.Option(0, help="Seed recorded in the asset's metadata.")) -> None:
    """Build the demo head (FLAME 2023 Open topology, procedural rigging) into a FLAME-format .npz."""
    from pointillist_data.flame import build_demo_asset, save_flame_asset

    a = build_demo_asset(seed)
    save_flame_asset(a, out)
    console.print(f"demo head ({a.num_vertices} vertices, {a.num_faces} faces) written to [bold]{out}[/]")


@app.command("demo-capture")
def demo_capture(out: Path = typer.Option(..., "--out", help="Folder for the NeRSemble-layout capture."),
                 identities: int = typer.Option(1, help="Number of synthetic participants."),
                 timesteps: int = typer.Option(8, help="Frames per sequence."),
                 scale: float = typer.Option(1 / 20, help="Fraction of the 2200x3208 NeRSemble frame."),
                 seed: int = typer.Option(0, help="Seed (identities, appearance, rig)."),
                 flame: Path | None = FLAME_OPT) -> None:
    """Render the synthetic capture (the embedded default) in the NeRSemble v2 layout, with ground truth."""
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture
    from pointillist_data.flame import resolve_flame_asset

    cfg = SyntheticCaptureConfig(identities=identities, timesteps=timesteps, scale=scale, seed=seed)
    with console.status("rendering the synthetic capture"):
        s = make_synthetic_capture(out, cfg, resolve_flame_asset(flame),
                                   progress=lambda pid: console.print(f"participant {pid:03d} written"))
    w, h = s["image_size"]
    console.print(f"synthetic capture: {len(s['participants'])} participant(s), 16 cameras at {w}x{h}, "
                  f"{timesteps} timesteps -> [bold]{out}[/]")


@app.command("demo")
def demo(out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
         flame: Path | None = FLAME_OPT) -> None:
    """Run the end-to-end demo on the embedded default (the demo head)."""
    from pipelines.demo import run_demo

    run_demo(out, flame)


# the other command groups register themselves on the shared app
from . import cli_avatar, cli_data, cli_evaluate, cli_import, cli_model, cli_pipeline, cli_stages  # noqa: E402,F401

# the help lists commands in pipeline order (app.COMMAND_PANELS), not in import order
app.registered_commands.sort(key=lambda c: command_order(c.name))
app.registered_groups.sort(key=lambda g: command_order(g.name))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
