"""Outputs of ``pointillist evaluate``: ``results.json`` (every figure with its protocol and
seeds), ``report.md`` (laid out like the paper's Table 1, or Table 2 for ``--ablation``, then
per-identity rows) and pictures (source | ours | ground truth strips, metric histograms).
Every file is written under a temporary name and renamed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pointillist_data.fileio import atomic_write_text
from pointillist_data.viz import save_png

__all__ = ["write_results", "write_ablation", "ablation_label", "PAPER_TABLE1", "PAPER_TABLE2"]

# the paper's figures on NeRSemble (Tables 1 and 2), shown beside ours for reference
PAPER_TABLE1 = {"lpips": 0.15, "fid": 95.18, "akd": 2.38, "apd": 22.86, "cross_fid": 160.74, "cross_clip": 0.75}
PAPER_TABLE2 = {"FLAME position": (0.23, 120.34, 4.82, 41.22), "Pointwise AR feature": (0.22, 110.93, 5.89, 32.96),
                "Positional encoding": (0.19, 103.80, 5.81, 41.49), "Ours (P + F)": (0.15, 95.18, 2.38, 22.86)}


def _clean(x: Any) -> Any:
    """NaN / inf -> None and NumPy scalars -> Python, so the JSON is strict."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _f(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``img`` scaled to fit ``h x w`` and centred on white."""
    s = min(h / img.shape[0], w / img.shape[1])
    r = np.asarray(Image.fromarray(img).resize((max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                                               Image.BILINEAR))
    out = np.full((h, w, 3), 255, np.uint8)
    y, x = (h - r.shape[0]) // 2, (w - r.shape[1]) // 2
    out[y:y + r.shape[0], x:x + r.shape[1]] = r[..., :3]
    return out


def _sheet(tiles: list[np.ndarray], labels: list[str], cols: int, band: int = 12, pad: int = 2) -> np.ndarray:
    """Tiles ``(h, w, 3)`` in a grid, each under a dark caption band (readable on white renders)."""
    from PIL import ImageDraw

    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + band + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (t, lab) in enumerate(zip(tiles, labels, strict=True)):
        x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + band + pad)
        draw.rectangle([x, y, x + w - 1, y + band - 1], fill=(40, 40, 40))
        draw.text((x + 2, y), lab, fill=(255, 255, 255))
        sheet.paste(Image.fromarray(np.ascontiguousarray(t[..., :3])), (x, y + band))
    return np.asarray(sheet)


def _strips(frames: dict[str, dict], out: Path) -> dict[str, str]:
    files = {}
    for sid, fr in frames.items():
        h, w = fr["self_pred"].shape[1:3]
        src = _fit(fr["source"], h, w)
        tiles, labels = [], []
        for j in range(len(fr["self_pred"])):
            t, cam = fr["self_keys"][j]
            tiles += [src, fr["self_pred"][j], fr["self_gt"][j]]
            labels += ["source", f"ours t{t}", f"truth {cam}"]
        files[f"self_{sid}"] = str(save_png(_sheet(tiles, labels, 3), out / f"self_{sid}.png"))
        if "cross_pred" in fr:
            tiles, labels = [], []
            for j in range(len(fr["cross_pred"])):
                t, cam = fr["cross_keys"][j]
                tiles += [src, fr["cross_driver"][j], fr["cross_pred"][j]]
                labels += ["source", f"driver t{t}", "ours"]
            files[f"cross_{sid}"] = str(save_png(_sheet(tiles, labels, 3), out / f"cross_{sid}.png"))
    return files


def _histograms(results: dict[str, Any], path: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointillist_data.pictures import save_figure

    panels = []
    for part, title in (("self", "self"), ("cross", "cross")):
        rows = results[part]["frames"]
        for m in ("psnr", "ssim", "lpips", "akd", "apd", "clip"):
            v = np.array([r[m] for r in rows if m in r], np.float64)
            v = v[np.isfinite(v)]
            if len(v):
                panels.append((f"{title} {m.upper()} ({len(v)} frames)", v))
    if not panels:
        return None
    cols = min(4, len(panels))
    rows_n = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.6 * rows_n), squeeze=False)
    for ax, (title, v) in zip(axes.flat, panels, strict=False):
        ax.hist(v, bins=min(20, max(5, len(v) // 2)), color="#4a7ab5")
        ax.axvline(v.mean(), color="k", lw=1, ls="--")
        ax.set_title(f"{title}\nmean {v.mean():.3g}", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return str(save_figure(fig, path, dpi=80))


def _table1(label: str, r: dict[str, Any]) -> list[str]:
    s, c = r["self"]["summary"], r["cross"]["summary"]
    p = PAPER_TABLE1
    return [
        "| Method | LPIPS↓ | FID↓ | AKD↓ | APD↓ | Cross-FID↓ | Cross-CLIP↑ | Cross-AKD↓ | Cross-APD↓ | PSNR↑ | SSIM↑ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {label} | {_f(s.get('lpips'))} | {_f(s.get('fid'), 2)} | {_f(s.get('akd'), 2)} | {_f(s.get('apd'), 2)} | "
        f"{_f(c.get('fid'), 2)} | {_f(c.get('clip'))} | {_f(c.get('akd'), 2)} | {_f(c.get('apd'), 2)} | "
        f"{_f(s.get('psnr'), 2)} | {_f(s.get('ssim'))} |",
        f"| *AvatarPointillist, paper (NeRSemble)* | *{p['lpips']}* | *{p['fid']}* | *{p['akd']}* | *{p['apd']}* | "
        f"*{p['cross_fid']}* | *{p['cross_clip']}* | | | | |",
    ]


def _per_identity(r: dict[str, Any]) -> list[str]:
    lines = ["| identity | frames | faces found | PSNR↑ | SSIM↑ | LPIPS↓ | AKD↓ | APD↓ | cross frames | Cross-CLIP↑ | "
             "Cross-AKD↓ | Cross-APD↓ |", "| --- " * 12 + "|"]
    cross = r["cross"]["per_identity"]
    for sid, d in r["self"]["per_identity"].items():
        c = cross.get(sid, {})
        lines.append(f"| {sid} | {d['frames']} | {d.get('faces_found', 'n/a')} | {_f(d.get('psnr'), 2)} | "
                     f"{_f(d.get('ssim'))} | {_f(d.get('lpips'))} | {_f(d.get('akd'), 2)} | {_f(d.get('apd'), 2)} | "
                     f"{c.get('frames', '-')} | {_f(c.get('clip'))} | {_f(c.get('akd'), 2)} | {_f(c.get('apd'), 2)} |")
    return lines


def _seen_line(rec: dict[str, Any] | None) -> str:
    """Which identities were scored, and whether any was trained on (stated either way)."""
    if not rec:
        return "* identities scored: not checked against the training identities (results of an earlier version)"
    t = rec["trained_on"]
    by = "; ".join(f"{k} trained on {', '.join(v) if v else 'none'}" if v is not None else f"{k}: not recorded"
                   for k, v in t.items())
    if rec["seen"] or any(v is None for v in t.values()):
        seen = ", ".join(rec["seen"]) or "unknown (a checkpoint records no training identities)"
        return (f"* identities scored: {', '.join(rec['scored'])}; **seen in training: {seen}** (--allow-seen): "
                f"these figures are not held-out results ({by})")
    return f"* identities scored: {', '.join(rec['scored'])}; none was seen in training ({by})"


def _protocol_lines(p: dict[str, Any]) -> list[str]:
    src = ", ".join(f"{s}: t{v['timestep']} ({v['timestep_id']}) cam {v['camera']}" for s, v in p["sources"].items())
    lines = [
        f"* split: {p.get('split') or p.get('note')}; test identities: {', '.join(p['test_identities'])}",
        _seen_line(p.get("seen_in_training")),
        f"* points: {p['points']}; animation: {p['animation']}; seed {p['seed']}; decoder step {p['decoder_step']}",
        f"* sources (most frontal camera, intermediate timestep with least head turn): {src}",
        f"* evaluation cameras: {p['eval_cameras']}; images {p['image_size'][0]}x{p['image_size'][1]}",
        f"* cross-reenactment driver: {p['driver']} (timesteps {p['driver_timesteps']}); targets: "
        f"{', '.join(p['cross_targets'])}",
        f"* metrics: {', '.join(p['metrics'])}",
    ]
    if p["skipped_metrics"]:
        lines.append("* not measured: " + "; ".join(f"{m} ({why})" for m, why in p["skipped_metrics"].items()))
    lines.append("* units: " + "; ".join(f"{k} {v}" for k, v in p["units"].items()))
    return lines


def write_results(results: dict[str, Any], out: str | Path, label: str = "pointillist") -> dict[str, str]:
    """Write ``results.json``, ``report.md`` and ``pictures/`` under ``out``; returns ``{name: path}``."""
    out = Path(out)
    frames = results.get("_frames", {})
    files = _strips(frames, out / "pictures")
    hist = _histograms(results, out / "pictures" / "histograms.png")
    if hist:
        files["histograms"] = hist
    doc = {k2: v for k2, v in results.items() if not k2.startswith("_")}
    doc["pictures"] = {n: os.path.relpath(p, out) for n, p in files.items()}
    files["json"] = str(atomic_write_text(out / "results.json", json.dumps(_clean(doc), indent=1)))
    p = results["protocol"]
    md = ["# Evaluation (paper section 5.3)", "", "## Table 1 layout: self- and cross-reenactment", "",
          *_table1(label, results), "",
          "FID from a few frames is biased upwards and only comparable between runs with the same frames; the "
          "paper's row is NeRSemble with its weights, for orientation only.", "", "## Per identity", "",
          *_per_identity(results), "", "## Protocol", "", *_protocol_lines(p), "", "## Pictures", ""]
    for n, path in files.items():
        if n != "json":
            md.append(f"![{n}]({os.path.relpath(path, out)})")
    files["report"] = str(atomic_write_text(out / "report.md", "\n".join(md) + "\n"))
    return files


def ablation_label(meta: dict[str, Any], inputs: str) -> str:
    """The paper's Table 2 row of a decoder checkpoint from its ablation switches."""
    if meta.get("points") == "flame":
        return "FLAME position"
    return {"feature": "Pointwise AR feature", "position": "Positional encoding"}.get(inputs, "Ours (P + F)")


def write_ablation(rows: list[tuple[str, str, dict[str, Any], str]], out: str | Path) -> dict[str, str]:
    """Table 2 from ``(label, checkpoint, results, subfolder)`` rows: ``ablation.json`` and ``ablation.md``."""
    out = Path(out)
    order = list(PAPER_TABLE2)
    rows = sorted(rows, key=lambda r: order.index(r[0]) if r[0] in order else len(order))
    md = ["# Ablation (paper Table 2 layout): decoder inputs", "",
          "| Configuration | report | LPIPS↓ | FID↓ | AKD↓ | APD↓ | PSNR↑ | SSIM↑ | paper LPIPS / FID / AKD / APD |",
          "| --- " * 9 + "|"]
    for label, _, r, sub in rows:
        s = r["self"]["summary"]
        ref = PAPER_TABLE2.get(label)
        md.append(f"| {label} | [{sub}]({sub}/report.md) | {_f(s.get('lpips'))} | {_f(s.get('fid'), 2)} | {_f(s.get('akd'), 2)} | "
                  f"{_f(s.get('apd'), 2)} | {_f(s.get('psnr'), 2)} | {_f(s.get('ssim'))} | "
                  f"{' / '.join(str(x) for x in ref) if ref else ''} |")
    if rows:
        md += ["", "Self-reenactment figures; the protocol (identical for every row):", "",
               *_protocol_lines(rows[0][2]["protocol"])]
    doc = {"rows": [{"configuration": label, "checkpoint": ckpt, "self": r["self"]["summary"],
                     "cross": r["cross"]["summary"], "report": f"{sub}/report.md"} for label, ckpt, r, sub in rows],
           "protocol": rows[0][2]["protocol"] if rows else None}
    return {"json": str(atomic_write_text(out / "ablation.json", json.dumps(_clean(doc), indent=1))),
            "report": str(atomic_write_text(out / "ablation.md", "\n".join(md) + "\n"))}
