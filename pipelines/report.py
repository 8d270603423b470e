"""The run report: markdown with per-participant stage results and pictures."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .workspace import Workspace

__all__ = ["write_report", "aggregate_table", "REPORT_PICTURES"]


# each stage's picture in its output folder (pointillist_data/pictures.py), in stage order
REPORT_PICTURES = (("landmarks", "*/landmarks.png"), ("track", "overlay.png"), ("fit", "heldout.png"),
                   ("canonicalize", "canonical.png"), ("tokenize", "sample_tokens.png"))


def _stat(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    a = sorted(values)
    mean = sum(a) / len(a)
    return f"{fmt.format(mean)} (min {fmt.format(a[0])}, max {fmt.format(a[-1])})"


def _peaks(records: dict) -> str:
    """``stage MB, ...`` of the stage records' ``timings.peak_rss_mb`` (max over participants)."""
    peak: dict[str, float] = {}
    for recs in records.values():
        for stage, r in recs.items():
            mb = (r.get("timings") or {}).get("peak_rss_mb") if isinstance(r, dict) else None
            if isinstance(mb, (int, float)):
                peak[stage] = max(peak.get(stage, 0.0), float(mb))
    return ", ".join(f"{k} {v:.0f}" for k, v in peak.items()) or "-"


def aggregate_table(summary: dict, records: dict, validation: dict | None) -> list[str]:
    """Markdown lines of the run's aggregate figures (the report opens with them)."""
    done = [s for s in summary["summaries"] if s["status"] == "complete"]
    metric = lambda stage, key: [r[stage]["metrics"][key] for r in records.values()  # noqa: E731
                                 if r.get(stage, {}).get("status") == "complete" and key in r[stage].get("metrics", {})]
    rows = [
        ("participants", f"{len(summary['summaries'])} ({len(done)} complete, {len(summary['failed'])} failed)"),
        ("tracking landmark error (px, mean per participant)", _stat(metric("track", "landmark_error_px_mean"), "{:.2f}")),
        ("fitting held-out PSNR (dB)", _stat(metric("fit", "psnr_heldout_db"), "{:.2f}")),
        ("fitting held-out SSIM", _stat(metric("fit", "ssim_heldout"), "{:.3f}")),
        ("Gaussians per participant", _stat([float(g) for g in metric("fit", "gaussians")], "{:.0f}")),
        ("tokens per participant", _stat([float(t) for t in metric("tokenize", "tokens")], "{:.0f}")),
        ("store", f"{validation['samples']} sample(s), {validation['points']} points, valid" if validation
         else str(summary.get("shard", {}).get("store", "-"))),
        ("wall time", f"{summary.get('wall_s', 0):.1f} s"),
        ("peak memory per stage (MB, the worker's RSS, max over participants)", _peaks(records)),
    ]
    return ["| figure | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]


def write_report(out: str, summary: dict, validation: dict | None = None) -> str:
    """Write ``<out>/report.md`` (+ ``report/*.png``) and return its location."""
    ws = Workspace(out)
    records = ws.records()
    tmp = Path(tempfile.mkdtemp(prefix="pointillist-report-"))
    lines = ["# pointillist run report", ""] + aggregate_table(summary, records, validation) + [
        "", f"Wall time: {summary.get('wall_s', 0):.1f} s. Failed participants: {', '.join(summary['failed']) or 'none'}.",
        "", "## Participants", ""]
    lines += ["| participant | status | landmarks | track (landmark px) | fit (held-out PSNR dB, Gaussians) | tokens |",
              "| --- | --- | --- | --- | --- | --- |"]
    pictures = []
    for s in summary["summaries"]:
        pid = s["participant"]
        r = records.get(pid, {})
        cell = lambda st, f, r=r: (("imported" if r[st].get("imported") else f(r[st]["metrics"]))  # noqa: E731
                                   if r.get(st, {}).get("status") == "complete" else r.get(st, {}).get("status", "-"))
        lines.append("| " + " | ".join([
            pid, s["status"] + (f" ({s['failed_stage']}: {s['error']})" if s["status"] != "complete" else ""),
            cell("landmarks", lambda m: f"{m['cameras']} cameras"),
            cell("track", lambda m: f"{m['landmark_error_px_mean']:.2f}"),
            cell("fit", lambda m: f"{m['psnr_heldout_db']:.2f}, {m['gaussians']}"),
            cell("tokenize", lambda m: str(m["tokens"])),
        ]) + " |")
        for stage, pattern in REPORT_PICTURES:
            rec = r.get(stage, {})
            if rec.get("status") == "complete":
                folder = ws.materialize(pid, stage, Path(rec["output_dir"]).name)
                for src in sorted(folder.glob(pattern)):  # landmarks: one picture per sequence
                    what = stage if src.parent == folder else f"{stage} {src.parent.name}"
                    name = f"{pid}_{what.replace(' ', '_')}.png"
                    shutil.copyfile(src, tmp / name)
                    pictures.append((pid, what, name))
    lines += ["", "## Store", "", "```", json.dumps({**summary["shard"], **(validation or {})}, indent=1), "```", ""]
    for pid, stage, name in pictures:
        lines += [f"### {pid}: {stage}", "", f"![{pid} {stage}](report/{name})", ""]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
    for _, _, name in pictures:
        ws.put_file(tmp / name, f"report/{name}")
    dst = ws.put_file(tmp / "report.md", "report.md")
    shutil.rmtree(tmp, ignore_errors=True)
    return dst
