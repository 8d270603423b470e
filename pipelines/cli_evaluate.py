"""``pointillist evaluate``: the paper's metrics and reenactment protocol (section 5.3)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import FLAME_OPT, app, console


@app.command("evaluate")
def evaluate_cmd(
    store: str = typer.Option(..., "--store", help="Token store path or URL."),
    decoder: list[Path] = typer.Option(..., "--decoder", help="Decoder checkpoint (train-decoder); repeat with "
                                                              "--ablation."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.md, pictures/."),
    ar: Path | None = typer.Option(None, "--ar", help="AR checkpoint (default: the one the decoder names)."),
    supervision: str | None = typer.Option(None, "--supervision", help="Supervision store (default: beside the "
                                                                       "token store)."),
    split: Path | None = typer.Option(None, "--split", help="Split manifest (manifests/ schema 'split'); its test "
                                                            "identities are evaluated. Default: the token store's "
                                                            "test split, else every identity."),
    allow_seen: bool = typer.Option(False, "--allow-seen", help="Score identities the checkpoints trained on "
                                                                "(refused by default); the report says so."),
    points: str = typer.Option("generated", help="generated (AR sampling from the source, the paper's protocol) or "
                                                 "stored (the stored cloud teacher-forced)."),
    camera: list[str] = typer.Option([], "--camera", help="Evaluation camera serial (repeatable; default: the "
                                                          "decoder's held-out cameras, else all)."),
    driver: str | None = typer.Option(None, "--driver", help="Cross-reenactment driver identity (default: drawn "
                                                             "with the seed)."),
    seed: int = typer.Option(0, help="Seed of the protocol's choices and of AR sampling."),
    max_timesteps: int | None = typer.Option(None, help="At most this many driving timesteps per identity."),
    metrics: str | None = typer.Option(None, help="Comma-separated: psnr,ssim,lpips,fid,akd,apd,clip (default: "
                                                  "PSNR, SSIM, AKD, APD and each metric whose weights are given)."),
    lpips_weights: Path | None = typer.Option(None, "--lpips-weights", help="Local VGG16 LPIPS weights."),
    inception_weights: Path | None = typer.Option(None, "--inception-weights", help="Local Inception v3 weights "
                                                                                    "(pytorch-fid or torchvision)."),
    clip_weights: Path | None = typer.Option(None, "--clip-weights", help="Local CLIP vision model folder "
                                                                          "(transformers)."),
    render_scale: float = typer.Option(1.0, help="Render and compare at this fraction of the stored view size."),
    max_points: int = typer.Option(30000, help="Longest generated cloud."),
    feature_cache: Path | None = typer.Option(None, help="AR feature cache for --points stored (e.g. the decoder "
                                                         "run's ar_features)."),
    ablation: bool = typer.Option(False, "--ablation", help="Compare the --decoder checkpoints (ablation switches) "
                                                            "in the paper's Table 2 layout; trains nothing."),
    device: str = typer.Option("cpu", help="Torch device."),
    flame: Path | None = FLAME_OPT,
) -> None:
    """Self- and cross-reenactment on the test split: PSNR, SSIM, LPIPS, FID, AKD, APD, CLIP (paper Table 1 / 2)."""
    from pointillist_data.errors import InputError
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.progress import cli_progress
    from pointillist_model.evaluate import EvalConfig, run_ablation, run_evaluation

    if len(decoder) > 1 and not ablation:
        raise InputError("--decoder", "several checkpoints need --ablation")
    cfg = EvalConfig(store=store, decoder=str(decoder[0]), out=str(out), supervision=supervision,
                     ar=str(ar) if ar else None, split=str(split) if split else None, points=points,
                     cameras=list(camera) or None, driver=driver, seed=seed, max_timesteps=max_timesteps,
                     metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
                     lpips_weights=str(lpips_weights) if lpips_weights else None,
                     inception_weights=str(inception_weights) if inception_weights else None,
                     clip_weights=str(clip_weights) if clip_weights else None, render_scale=render_scale,
                     max_points=max_points, feature_cache=str(feature_cache) if feature_cache else None, device=device,
                     allow_seen=allow_seen)
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
