"""`pointillist run --dry-run` and the cost model (issue 29): the plan names the resolved
selection, the input bytes, the stages a re-run skips and every problem, writes nothing and
starts no worker; the estimate follows the cost model's fitted lines."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.plan import COST_MODEL, COSTED, estimate_participant, load_cost_model, plan_run
from pipelines.runner import run_participant
from pipelines.stages import PipelineConfig

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def _invoke(*args):
    return CliRunner().invoke(app, ["run", *map(str, args)])


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def _model(cpu_lo, cpu_hi, share=0.5):
    """A cost model in the checked-in format with chosen lines (two scales, 4x the pixels)."""
    stages = lambda cpu: {s: {"units": "frames", "cpu_s": list(cpu), "wall_s": list(cpu), "peak_rss_mb": [100.0, 0.0],  # noqa: E731
                              "out_bytes": [0.0, 1000.0]} for s in COSTED}
    return {"date": "2026-12-07", "machine": {"cpu": "x", "cores": 2},
            "budgets": {"tracking": {"rigid_iters": 10, "first_frame_iters": 20, "frame_iters": 10, "global_iters": 6},
                        "fitting": {"iterations": 30}},
            "iteration_share": {"track": share, "fit": share},
            "devices": {"cpu": {"scales": [{"scale": 0.05, "pixels": 100 * 100, "stages": stages(cpu_lo)},
                                           {"scale": 0.1, "pixels": 200 * 200, "stages": stages(cpu_hi)}]}}}


def test_estimate_follows_the_fitted_lines():
    # at the bench's budgets, midway in pixels between the two scales: a and b interpolated
    bench = {"rigid_iters": 10, "first_frame_iters": 20, "frame_iters": 10, "global_iters": 6}
    cfg = PipelineConfig(capture=".", out=".", participants=[1], device="cpu", tracking=bench, fitting={"iterations": 30})
    m = _model((1.0, 2.0), (3.0, 4.0))
    est = estimate_participant(m, cfg, (250, 100), frames=5, cameras=16)  # 25000 px: half way from 10000 to 40000
    # "frames" units for every stage of this model: (2 + 3 * 5) = 17 s per stage at the midpoint
    assert est["stages"]["landmarks"]["cpu_s"] == pytest.approx(2.0 + 3.0 * 5)
    assert est["cpu_s"] == pytest.approx(len(COSTED) * 17.0)
    assert est["out_bytes"] == pytest.approx(len(COSTED) * 5000.0) and est["gpu_s"] == 0
    # twice the fitting iterations: the iteration-bound half doubles (17 * (0.5 + 0.5 * 2))
    cfg2 = PipelineConfig(capture=".", out=".", participants=[1], device="cpu", tracking=bench, fitting={"iterations": 60})
    assert estimate_participant(m, cfg2, (250, 100), 5, 16)["stages"]["fit"]["cpu_s"] == pytest.approx(17.0 * 1.5)
    # tracking: rigid + first + per-frame * (frames - 1) + global = 10 + 20 + 10 * 4 + 6 = 76 in the bench;
    # frame_iters 30 gives 10 + 20 + 120 + 6 = 156
    cfg3 = PipelineConfig(capture=".", out=".", participants=[1], device="cpu", tracking={**bench, "frame_iters": 30},
                          fitting={"iterations": 30})
    assert estimate_participant(m, cfg3, (250, 100), 5, 16)["stages"]["track"]["cpu_s"] == \
        pytest.approx(17.0 * (0.5 + 0.5 * 156 / 76))
    # beyond the measured scales the lines are extrapolated; never below zero
    assert estimate_participant(_model((1.0, 2.0), (0.0, -1.0)), cfg, (400, 400), 5, 16)["cpu_s"] == 0.0


def test_checked_in_cost_model_is_complete_and_validated():
    m = load_cost_model()
    assert m is not None, f"{COST_MODEL} missing: run `make bench`"
    assert m["date"] and m["machine"]["cores"] >= 1
    scales = m["devices"]["cpu"]["scales"]
    assert len(scales) == 2 and scales[0]["pixels"] < scales[1]["pixels"]
    for s in scales:
        for stage in COSTED:
            fig = s["stages"][stage]
            assert len(fig["points"]) == 2 and all(len(fig[k]) == 2 for k in ("cpu_s", "peak_rss_mb", "out_bytes"))
    # the bench's own check: a demo-like run unlike the measured ones, estimated within 2x
    v = m["validation"]
    assert 0.5 <= v["estimated_cpu_s"] / v["measured_cpu_s"] <= 2.0, v


def test_dry_run_on_three_participants_prints_the_plan_and_writes_nothing(tiny_capture, tmp_path, monkeypatch):
    root, cfg = tiny_capture
    import dask.distributed

    def no_cluster(*a, **k):
        raise AssertionError("the dry run started a dask cluster")

    monkeypatch.setattr(dask.distributed, "LocalCluster", no_cluster)
    monkeypatch.setattr(dask.distributed, "Client", no_cluster)
    before = _tree(root)
    out = tmp_path / "run"
    r = _invoke("--capture", root, "--out", out, "--participants", "all", "--frames", "0:2", "--cameras", "0,8,15",
                "--dry-run")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich wraps long lines
    for pid in cfg.participants:
        # the input the stages read: calibration, the three cameras' videos and backgrounds
        base = root / f"{pid:03d}"
        files = list((base / "calibration").glob("*.json"))
        for serial in _serials(base, (0, 8, 15)):
            files += [base / "sequences" / cfg.sequence / "images" / f"cam_{serial}.mp4",
                      base / "sequences" / "BACKGROUND" / f"image_{serial}.jpg"]
        kb = sum(os.path.getsize(f) for f in files) / 1000
        assert f"participant {pid:03d}: sequences {cfg.sequence} (2 frames); 2 frames x 3 cameras" in text, text
        W, H = cfg.frame_size
        assert re.search(rf"participant {pid:03d}: .*read at {W}x{H} .*input {kb:.1f} kB", text), text
    assert text.count("stages: landmarks run, track run, fit run") == 3
    assert "total: 3 participant(s), 6 frames, 18 camera-frames" in text
    assert re.search(r"estimated [0-9.]+ h CPU .* output [0-9.]+ [kMG]B", text), text
    assert "problems: none found" in text
    assert not out.exists() and _tree(root) == before  # nothing written anywhere


def _serials(base, indices):
    """Serials of the rig's cameras at ``indices`` (NeRSemble order) that have a video."""
    from pointillist_data.capture.nersemble import SERIALS

    return [SERIALS[i] for i in indices]


def test_dry_run_lists_problems_and_exits_2(tiny_capture, tmp_path):
    root, cfg = tiny_capture
    capture = tmp_path / "capture"
    for pid in cfg.participants[:2]:
        shutil.copytree(root / f"{pid:03d}", capture / f"{pid:03d}")
    pid = cfg.participants[0]
    video = capture / f"{pid:03d}" / "sequences" / cfg.sequence / "images" / "cam_222200037.mp4"
    video.write_bytes(b"not a video")
    (capture / f"{cfg.participants[1]:03d}" / "calibration" / "camera_params.json").unlink()
    out = tmp_path / "run"
    r = _invoke("--capture", capture, "--out", out, "--participants", f"{cfg.participants[0]},{cfg.participants[1]},5",
                "--dry-run")
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "problems (3): the run would stop before starting" in text
    assert "cam_222200037.mp4" in text and "camera_params.json: camera calibration not found" in text
    assert "participant 005: no folder" in text
    assert not out.exists()


def test_dry_run_names_the_stages_a_rerun_skips(tiny_capture, tmp_path):
    root, cfg = tiny_capture
    pid = cfg.participants[0]
    out = tmp_path / "run"
    pc = PipelineConfig(capture=str(root), out=str(out), participants=[pid], landmarks=GT, device="cpu")
    assert run_participant(pc.to_dict(), pid, until="landmarks")["stages"] == {"landmarks": "complete"}
    before = _tree(out)
    plan = plan_run(pc)
    assert plan["problems"] == []
    states = plan["participants"][0]["stages"]
    assert states["landmarks"] == "skip (complete)" and states["track"] == "run"
    # skipped stages cost nothing: what is left is the estimate without landmarks
    p = plan["participants"][0]
    left = sum(v["cpu_s"] for k, v in p["estimate"]["stages"].items() if k != "landmarks")
    assert p["todo"]["cpu_s"] == pytest.approx(left)
    forced = PipelineConfig(**{**pc.to_dict(), "force": ["landmarks"]})
    assert plan_run(forced)["participants"][0]["stages"]["landmarks"] == "redo (--force)"
    # another selection changes the landmarks' input hash: the stage runs again
    other = PipelineConfig(**{**pc.to_dict(), "cameras": ["0", "1"]})
    assert plan_run(other)["participants"][0]["stages"]["landmarks"] == "run"
    assert _tree(out) == before and json.loads((out / "work" / f"{pid:03d}" / "landmarks" / "record.json")
                                               .read_text())["status"] == "complete"
