"""``pointillist run --dry-run``: what a run would read, write, skip and cost, before it starts.

The plan resolves every participant's selection (sequences, frames, cameras, the size frames
are read at) from the capture's video headers, sums the input files the stages read, finds
the stages whose records say complete with the inputs and config of this run (the runner's
own skip rule, :func:`pipelines.runner.run_participant`, evaluated without running), lists
every problem :func:`pipelines.runner.check_run` would stop on (without its write probes)
and estimates CPU-hours, peak memory per worker and output bytes from the cost model that
``make bench`` measures (``benchmarks/bench_pipeline.py`` writes ``pipelines/cost_model.json``).
Nothing is written and no dask cluster starts.

Cost model: per device, per measured scale, per stage ``y = a + b * units`` for CPU seconds
(one thread), wall seconds, peak RSS (MB) and output bytes (units: camera-frames for
landmarks, supervise and shard; frames for the others). Between the measured scales the
coefficients are interpolated linearly in pixels per frame, beyond them extrapolated
(never below the smaller measured coefficient, nor zero). Tracking and fitting are measured at small budgets: the share of their
time that grows with iterations (``iteration_share``, measured) is scaled by the ratio of
the run's iterations to the bench's (tracking: rigid + first-frame + per-frame x (frames-1)
+ global iterations; fitting: iterations).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from pointillist_data.errors import PointillistError

from .stages import STAGES, PipelineConfig, fitting_config, stage_config, stage_plans, tracking_config
from .workspace import Workspace, subject_key

__all__ = ["COST_MODEL", "load_cost_model", "estimate_participant", "plan_run", "plan_lines", "stage_states", "dry_run"]

COST_MODEL = Path(__file__).with_name("cost_model.json")
_UNITS = {"landmarks": "camera-frames", "track": "frames", "fit": "frames", "canonicalize": "frames",
          "tokenize": "frames", "supervise": "camera-frames", "shard": "camera-frames"}
COSTED = (*STAGES, "shard")


def load_cost_model(path: str | Path | None = None) -> dict | None:
    """The cost model (``pipelines/cost_model.json`` by default), or ``None`` when absent."""
    p = Path(path or COST_MODEL)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _coef(scales: list[dict], stage: str, key: str, pixels: float) -> tuple[float, float]:
    """``(a, b)`` of ``key`` for ``stage`` at ``pixels`` per frame: linear in pixels through
    the two nearest measured scales (the one scale when only one was measured)."""
    pts = sorted(scales, key=lambda s: s["pixels"])
    if len(pts) == 1:
        return tuple(pts[0]["stages"][stage][key])
    lo, hi = (pts[0], pts[1]) if pixels <= pts[1]["pixels"] else (pts[-2], pts[-1])
    for s0, s1 in zip(pts, pts[1:], strict=False):
        if s0["pixels"] <= pixels <= s1["pixels"]:
            lo, hi = s0, s1
    t = (pixels - lo["pixels"]) / (hi["pixels"] - lo["pixels"])
    a0, b0 = lo["stages"][stage][key]
    a1, b1 = hi["stages"][stage][key]
    a, b = a0 + t * (a1 - a0), b0 + t * (b1 - b0)
    # extrapolated, a slope that noise made fall with the image size would turn negative:
    # costs do not fall as images grow, so neither coefficient drops below its smaller measured value
    return max(a, min(a0, a1)), max(b, min(b0, b1), 0.0)


def _track_iters(c, frames: int) -> int:
    return c["rigid_iters"] + c["first_frame_iters"] + c["frame_iters"] * max(0, frames - 1) + c["global_iters"]


def estimate_participant(model: dict, cfg: PipelineConfig, image_size: tuple[int, int], frames: int,
                         cameras: int) -> dict[str, Any]:
    """Estimated cost of one participant's stages and its share of the sharding.

    Args:
        model: :func:`load_cost_model`'s dict.
        cfg: the run (its tracking / fitting budgets and devices).
        image_size: ``(width, height)`` pixels the frames are read at.
        frames: frames over all of the participant's selected sequences.
        cameras: cameras per frame.

    Returns:
        ``{"cpu_s", "gpu_s", "out_bytes", "peak_rss_mb", "unmeasured": [stages on a device
        the model has no figures for], "stages": {stage: {"device", "cpu_s" or "gpu_s",
        "out_bytes", "peak_rss_mb"}}}``. Seconds are of one worker on one core (CPU) or one GPU.
    """
    plans = stage_plans(cfg)
    pixels = image_size[0] * image_size[1]
    bench = model["budgets"]
    run_budget = {"track": _track_iters(tracking_config(cfg).to_dict(), frames),
                  "fit": fitting_config(cfg).iterations}
    bench_budget = {"track": _track_iters(bench["tracking"], frames), "fit": bench["fitting"]["iterations"]}
    out: dict[str, Any] = {"cpu_s": 0.0, "gpu_s": 0.0, "out_bytes": 0.0, "peak_rss_mb": 0.0, "unmeasured": [],
                           "stages": {}}
    for stage in COSTED:
        device = plans.get(stage, {"device": "cpu"})["device"].split(":")[0]
        figures = model.get("devices", {}).get(device)
        if figures is None:
            out["unmeasured"].append(f"{stage} on {device}")
            continue
        kind = figures["scales"][0]["stages"][stage].get("units", _UNITS[stage])  # the model names its units
        units = frames * cameras if kind == "camera-frames" else frames
        est = {}
        for key in ("cpu_s", "out_bytes", "peak_rss_mb"):
            a, b = _coef(figures["scales"], stage, key, pixels)
            est[key] = max(0.0, a + b * units)
        if stage in run_budget:  # the iteration-bound share scales with the run's budget
            share = model.get("iteration_share", {}).get(stage, 1.0)
            est["cpu_s"] *= (1 - share) + share * run_budget[stage] / bench_budget[stage]
        secs = est.pop("cpu_s")
        est["gpu_s" if device == "cuda" else "cpu_s"] = secs
        out["gpu_s" if device == "cuda" else "cpu_s"] += secs
        out["out_bytes"] += est["out_bytes"]
        out["peak_rss_mb"] = max(out["peak_rss_mb"], est["peak_rss_mb"])
        out["stages"][stage] = {"device": device, **est}
    return out


def stage_states(cfg: PipelineConfig, pid: int) -> dict[str, str]:
    """``{stage: "skip (complete)" | "skip (imported)" | "run" | "redo (--force)"}`` as the
    runner would decide them now, reading the stage records and the input-hash cache
    (written by nothing here: files changed since the last run are hashed again)."""
    from pointillist_data.manifests import HashCache, config_hash

    from .importers import imported_key
    from .runner import capture_hash

    ws = Workspace(cfg.out, scratch=cfg.out)  # a scratch path given: no temporary folder is made
    recs = {s: ws.read_record(pid, s) for s in STAGES}
    if not any(recs.values()):
        return {s: "redo (--force)" if s in cfg.force else "run" for s in STAGES}
    prev = capture_hash(cfg, pid, HashCache((ws.read_json(f"work/{subject_key(pid)}/input_hashes.json")
                                             or {}).get("files")))
    states: dict[str, str] = {}
    forced, chain = False, True
    for stage in STAGES:
        forced = forced or stage in cfg.force
        rec = recs[stage]
        if not chain or forced:
            states[stage] = "redo (--force)" if forced and rec else "run"
            chain = False
            continue
        in_hash = config_hash({"inputs": prev, "config": config_hash(stage_config(cfg, stage)), "stage": stage})
        if imported_key(ws, pid, stage, rec):
            states[stage] = "skip (imported)"
        elif rec and rec.get("status") == "complete" and rec.get("input_hash") == in_hash \
                and ws.exists(pid, stage, in_hash):
            states[stage] = "skip (complete)"
        else:
            states[stage], chain = "run", False
            continue
        prev = config_hash(rec["outputs"])
    return states


def _input_files(cfg: PipelineConfig, pid: int, seqs: list[str], serials: list[str]) -> list[Path]:
    """The files the stages read for one participant (calibration, the selected cameras' videos,
    alpha maps and backgrounds)."""
    root = Path(cfg.capture) / f"{pid:03d}"
    files = sorted(root.glob("calibration/*.json"))
    for s in seqs:
        for c in serials:
            files += [root / "sequences" / s / "images" / f"cam_{c}.mp4", root / "sequences" / s / "alpha_maps" /
                      f"cam_{c}.mp4"]
    files += [root / "sequences" / "BACKGROUND" / f"image_{c}.jpg" for c in serials]
    return [p for p in files if p.is_file()]


def _video_participant(cfg: PipelineConfig, subject: str, model: dict | None) -> dict[str, Any]:
    """One video identity's frames (from the video's header and the selection), input bytes
    (the video, its plate, its landmark file), stage states and estimate. The estimate's
    image size is the face crop's (``tracking.face_crop_size``, where tracking and fitting
    work), one camera; the frames' own size is listed beside it."""
    from .stages_monocular import _frames_read, _landmark_file, video_path, video_plate

    video = video_path(cfg, subject)
    frames, size = _frames_read(cfg, video)
    crop = tracking_config(cfg).face_crop_size
    files = [video, video_plate(cfg, subject), _landmark_file(cfg, subject)]
    info: dict[str, Any] = {"participant": subject, "sequences": {subject: len(frames)}, "frames": len(frames),
                            "cameras": ["video"], "image_size": list(size),
                            "work_size": [crop, crop] if crop else list(size),
                            "input_bytes": sum(p.stat().st_size for p in files if p is not None and p.is_file()),
                            "stages": stage_states(cfg, subject)}
    if model is not None:
        est = estimate_participant(model, cfg, tuple(info["work_size"]), len(frames), 1)
        todo = {s for s, v in info["stages"].items() if not v.startswith("skip")} | {"shard"}
        info["estimate"] = est
        info["todo"] = {k: sum(est["stages"][s].get(k, 0.0) for s in todo if s in est["stages"])
                        for k in ("cpu_s", "gpu_s", "out_bytes")}
    return info


def _participant(cfg: PipelineConfig, pid: int, model: dict | None) -> dict[str, Any]:
    """One participant's resolved selection, input bytes, stage states and estimate."""
    if cfg.videos is not None:
        return _video_participant(cfg, pid, model)
    from pointillist_data.capture.nersemble import NersembleSequence
    from pointillist_data.capture.selection import DEFAULT_NERSEMBLE_SCALE, resolve_sequences

    sel = cfg.selection()
    seqs = resolve_sequences(cfg.capture, pid, sel)
    per_seq, serials, size = {}, [], None
    for name in seqs:
        seq = NersembleSequence(cfg.capture, pid, name, scale=sel.effective_scale(DEFAULT_NERSEMBLE_SCALE))
        serials = sel.camera_serials(seq.serials, seq.where)
        per_seq[name] = len(sel.frame_indices(seq.num_frames))
        size = size or seq.image_size
    frames = sum(per_seq.values())
    info: dict[str, Any] = {"participant": f"{pid:03d}", "sequences": per_seq, "frames": frames, "cameras": serials,
                            "image_size": list(size),
                            "input_bytes": sum(p.stat().st_size for p in _input_files(cfg, pid, seqs, serials)),
                            "stages": stage_states(cfg, pid)}
    if model is not None:
        est = estimate_participant(model, cfg, size, frames, len(serials))
        todo = {s for s, v in info["stages"].items() if not v.startswith("skip")} | {"shard"}
        info["estimate"] = est
        info["todo"] = {k: sum(est["stages"][s].get(k, 0.0) for s in todo if s in est["stages"])
                        for k in ("cpu_s", "gpu_s", "out_bytes")}
    return info


def plan_run(cfg: PipelineConfig, until: str | None = None, model: dict | None = None) -> dict[str, Any]:
    """The dry run's plan: ``{"participants": [per participant], "problems": [lines],
    "total": {...}, "model": the cost model's date / machine or None, "plans": stage devices}``.

    Problems are those :func:`pipelines.runner.check_run` finds (configuration, capture,
    FLAME model, stores), without creating ``--out`` or probing it with a file.
    """
    from pointillist_data.fileio import build_config
    from pointillist_data.fitting.config import FittingConfig
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.store.commit import store_state
    from pointillist_data.tracking.config import TrackingConfig

    from .runner import _capture_problems, _check_supervision_store, _check_token_store, read_split
    from .stage_supervise import supervision_config

    model = model if model is not None else load_cost_model()
    problems: list[str] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except PointillistError as e:
            problems.append(str(e).strip().splitlines()[0] + (f" ({e.hint})" if getattr(e, "hint", None) else ""))
            return None

    for section, cls in (("tracking", TrackingConfig), ("fitting", FittingConfig)):
        attempt(build_config, cls, getattr(cfg, section), f"--config '{section}'")
    plans = attempt(stage_plans, cfg)
    attempt(supervision_config, cfg)
    if cfg.split:
        attempt(read_split, cfg.split)
    if cfg.videos is None:
        problems += [str(e).strip().splitlines()[0] for e in _capture_problems(cfg, masks=until != "landmarks")]
    else:  # each video's landmark file and the plate its matting needs; weights files
        from pointillist_data.capture.matting import check_specs

        from .stages_monocular import video_hash, video_matting

        specs = []
        for pid in cfg.participants:
            attempt(video_hash, cfg, pid)
            specs += [m[0] for m in [attempt(video_matting, cfg, pid)] if m]
        problems += [f"--matting: {line}" for line in check_specs(specs)[1]]
    asset = attempt(resolve_flame_asset, cfg.flame)
    if "://" not in cfg.out:
        p = Path(cfg.out)
        while not p.exists() and p != p.parent:
            p = p.parent
        if (p == Path(cfg.out) and not p.is_dir()) or not os.access(p, os.W_OK):
            problems.append(f"--out {cfg.out}: cannot write there ({p} is not a writable folder)")
    if asset is not None and store_state(cfg.store) in ("store", "foreign"):  # the checks that write nothing
        attempt(_check_token_store, cfg.store, asset)
    if asset is not None:
        attempt(_check_supervision_store, cfg.supervision_store)
    parts = []
    if not problems and plans is not None:
        for pid in cfg.participants:
            try:
                parts.append(_participant(cfg, pid, model))
            except (PointillistError, OSError) as e:
                problems.append(f"participant {subject_key(pid)}: {str(e).splitlines()[0]}")
    total = {"participants": len(parts), "frames": sum(p["frames"] for p in parts),
             "camera_frames": sum(p["frames"] * len(p["cameras"]) for p in parts),
             "input_bytes": sum(p["input_bytes"] for p in parts)}
    if model is not None and parts:
        for k in ("cpu_s", "gpu_s", "out_bytes"):
            total[k] = sum(p["todo"][k] for p in parts)
        total["peak_rss_mb"] = max(p["estimate"]["peak_rss_mb"] for p in parts)
        total["unmeasured"] = sorted({u for p in parts for u in p["estimate"]["unmeasured"]})
    meta = None if model is None else {k: model.get(k) for k in ("date", "machine", "source")}
    return {"participants": parts, "problems": problems, "total": total, "model": meta,
            "plans": {k: v for k, v in (plans or {}).items() if k != "warnings"}}


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _hours(s: float) -> str:
    h = s / 3600
    return f"{h:.3f} h" if h < 0.1 else f"{h:.2f} h" if h < 10 else f"{h:.0f} h"


def plan_lines(plan: dict, cfg: PipelineConfig, workers: int | None = None) -> list[str]:
    """The plan as terminal lines (plain text)."""
    sc = cfg.scale
    lines = [f"dry run: nothing is written and no worker starts; out {cfg.out}, store {cfg.store}"]
    for p in plan["participants"]:
        seqs = ", ".join(f"{k} ({v} frames)" for k, v in p["sequences"].items())
        cams = len(p["cameras"])
        if "work_size" in p:  # a video identity
            lines.append(f"video {p['participant']}: {p['frames']} frames read at {p['image_size'][0]}x"
                         f"{p['image_size'][1]}, tracked and fitted on a {p['work_size'][0]}x{p['work_size'][1]} "
                         f"face crop; input {_bytes(p['input_bytes'])}")
        else:
            lines.append(f"participant {p['participant']}: sequences {seqs}; {p['frames']} frames x {cams} cameras "
                     f"({'all' if not cfg.cameras else ','.join(p['cameras'])}); read at {p['image_size'][0]}x"
                         f"{p['image_size'][1]} (scale "
                         f"{'default 1/4' if sc is None else Fraction(sc).limit_denominator(64)}); input "
                         f"{_bytes(p['input_bytes'])}")
        lines.append("  stages: " + ", ".join(f"{k} {v}" for k, v in p["stages"].items()))
        if "estimate" in p:
            est = p["estimate"]
            per = ", ".join(f"{k} {v.get('cpu_s', v.get('gpu_s', 0)):.0f} s" for k, v in est["stages"].items())
            gpu = f", {_hours(p['todo']['gpu_s'])} GPU" if p["todo"]["gpu_s"] else ""
            lines.append(f"  estimate (still to run): {_hours(p['todo']['cpu_s'])} CPU{gpu}, output "
                         f"{_bytes(p['todo']['out_bytes'])}; all stages: {per}; peak memory {est['peak_rss_mb']:.0f} MB")
    t = plan["total"]
    if plan["participants"]:
        line = (f"total: {t['participants']} participant(s), {t['frames']} frames, {t['camera_frames']} camera-frames, "
                f"input {_bytes(t['input_bytes'])}")
        if "cpu_s" in t:
            n = workers or min(os.cpu_count() or 1, t["participants"])
            # a participant runs on one worker: the longest one bounds the wall time too
            wall = max(t["cpu_s"] / n, max(p["todo"]["cpu_s"] for p in plan["participants"]))
            line += (f"; estimated {_hours(t['cpu_s'])} CPU (about {_hours(wall)} of wall time on {n} "
                     f"worker(s))" + (f", {_hours(t['gpu_s'])} GPU" if t["gpu_s"] else "") +
                     f", output {_bytes(t['out_bytes'])}, peak memory per worker {t['peak_rss_mb']:.0f} MB")
        lines.append(line)
        for u in t.get("unmeasured", []):
            lines.append(f"not estimated: {u} (the cost model has no figures for that device; run `make bench` there)")
    m = plan["model"]
    if m is None:
        lines.append(f"no cost model ({COST_MODEL} absent): run `make bench` to measure one; no estimate")
    else:
        mach = m.get("machine") or {}
        lines.append(f"cost model: {COST_MODEL.name} measured {m.get('date')} on {mach.get('cpu')} "
                     f"({mach.get('cores')} cores), one thread per worker")
    if plan["problems"]:
        lines.append(f"problems ({len(plan['problems'])}): the run would stop before starting")
        lines += [f"  {x}" for x in plan["problems"]]
    else:
        lines.append("problems: none found")
    return lines


def dry_run(cfg: PipelineConfig, console, workers: int | None = None, until: str | None = None) -> int:
    """Print the plan of ``cfg`` on ``console`` (a rich Console); returns the number of
    problems found (the command exits with code 2 when there are any)."""
    from rich.markup import escape

    plan = plan_run(cfg, until)
    for line in plan_lines(plan, cfg, workers):
        console.print(escape(line), soft_wrap=True)
    return len(plan["problems"])
