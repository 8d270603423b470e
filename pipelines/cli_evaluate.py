"""``pointillist evaluate``: the paper's metrics and reenactment protocol (section 5.3)."""

from __future__ import annotations

from pathlib import Path

import typer

from pointillist_model.config import EvalConfig

from .app import FLAME_OPT, app, console
from .config_cli import config_command


def _decoder_field(decoder: list[Path], **_) -> dict:
    return {"decoder": str(decoder[0]) if decoder else None}


@config_command(app, "evaluate", EvalConfig, exclude=("decoder",), fields_from=_decoder_field)
def evaluate_cmd(
    cfg: EvalConfig,
    decoder: list[Path] = typer.Option(..., "--decoder", help="Decoder checkpoint (train-decoder); repeat with "
                                                              "--ablation."),
    ablation: bool = typer.Option(False, "--ablation", help="Compare the --decoder checkpoints (ablation switches) "
                                                            "in the paper's Table 2 layout; trains nothing."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Self- and cross-reenactment on the test split: PSNR, SSIM, LPIPS, FID, AKD, APD, CLIP (paper Table 1 / 2)."""
    from pointillist_data.errors import InputError
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.evaluate import run_ablation, run_evaluation

    if len(decoder) > 1 and not ablation:
        raise InputError("--decoder", "several checkpoints need --ablation")
    asset = resolve_flame_asset(flame)
    with cli_progress(console) as progress:
        if ablation:
            rows, files = run_ablation(cfg, [str(d) for d in decoder], asset, progress)
        else:
            res, files = run_evaluation(cfg, asset, progress)
    if ablation:
        for label, _, r, _ in rows:
            console.print(f"{label}: {_line(r)}")
    else:
        console.print(_line(res))
    console.print(f"report: [bold]{files['report']}[/]; figures: [bold]{files['json']}[/]")


def _line(r: dict) -> str:
    def fmt(d: dict, names: tuple[str, ...]) -> str:
        return ", ".join(f"{n.upper()} {d[n]:.3f}" for n in names if d.get(n) is not None and d[n] == d[n])

    s, c = r["self"]["summary"], r["cross"]["summary"]
    return (f"self ({s['frames']} frames): {fmt(s, ('psnr', 'ssim', 'lpips', 'fid', 'akd', 'apd')) or '-'}; "
            f"cross ({c['frames']} frames): {fmt(c, ('fid', 'clip', 'akd', 'apd')) or '-'}")
