"""Per-identity data-quality figures of a run on a synthetic capture (issue 30, item 4):
tracking vertex error against ground truth, fitted vs ground-truth Gaussian counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pointillist_data.errors import InputError
from pointillist_data.flame import FlameParams
from pointillist_data.flame.params import tracked_params_name
from pointillist_data.tracking.accuracy import fitted_gaussian_counts, pearson, tracking_vertex_error


def _gt(T: int = 3) -> FlameParams:
    rng = np.random.default_rng(3)
    return FlameParams(rotation=0.05 * rng.normal(size=(T, 3)), translation=0.01 * rng.normal(size=(T, 3)),
                       neck_pose=0.05 * rng.normal(size=(T, 3)), jaw_pose=np.abs(0.05 * rng.normal(size=(T, 3))),
                       eyes_pose=np.zeros((T, 6)), shape=0.8 * rng.normal(size=300), expr=rng.normal(size=(T, 100)),
                       timestep_id=np.array([f"{t:05d}" for t in range(T)]))


def _run(tmp_path, tracked: FlameParams, gt: FlameParams, pid: str = "901", relative: bool = True):
    cap, run = tmp_path / "capture", tmp_path / "run"
    gt.save(cap / pid / "ground_truth" / "EXP-1-head" / "flame_params.npz")
    out = run / "work" / pid / "track" / "0123abcd"
    tracked.save(out / tracked_params_name(50))
    rec = {"output_dir": f"work/{pid}/track/0123abcd" if relative else str(out)}
    (run / "work" / pid / "track" / "record.json").write_text(json.dumps(rec))
    return run, cap


@pytest.mark.parametrize("relative", [True, False])
def test_vertex_error_of_a_known_translation_is_that_translation(tmp_path, demo_asset, relative):
    # a rigid shift of every frame by (3, 0, 4) mm moves every vertex by exactly 5 mm
    gt = _gt()
    shifted = FlameParams(**{**gt.__dict__, "translation": gt.translation + np.array([0.003, 0.0, 0.004])})
    run, cap = _run(tmp_path, shifted, gt, relative=relative)
    e = tracking_vertex_error(run, cap, 901, demo_asset)
    assert e["frames"] == 3 and e["sequence"] == "EXP-1-head"
    assert e["mean_mm"] == pytest.approx(5.0, abs=1e-3)
    assert e["face_mm"] == pytest.approx(5.0, abs=1e-3) and e["max_mm"] == pytest.approx(5.0, abs=1e-3)


def test_vertex_error_counts_a_static_offset_and_matches_kept_timesteps(tmp_path, demo_asset):
    gt = _gt(4)
    # the tracking kept frames 1 and 3 only, and its static offset lifts every vertex by 2 mm
    kept = FlameParams.concatenate([gt.frame(1), gt.frame(3)])
    so = np.zeros((1, demo_asset.num_vertices, 3), np.float32)
    so[..., 1] = 0.002
    run, cap = _run(tmp_path, FlameParams(**{**kept.__dict__, "static_offset": so}), gt)
    e = tracking_vertex_error(run, cap, "901", demo_asset)
    assert e["frames"] == 2
    assert e["mean_mm"] == pytest.approx(2.0, abs=1e-3)


def test_vertex_error_refuses_missing_inputs(tmp_path, demo_asset):
    gt = _gt()
    run, cap = _run(tmp_path, gt, gt)
    assert tracking_vertex_error(run, cap, 901, demo_asset)["mean_mm"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="902"):
        tracking_vertex_error(run, cap, 902, demo_asset)
    other = FlameParams(**{**gt.__dict__, "timestep_id": np.array(["00007", "00008", "00009"])})
    run2, cap2 = _run(tmp_path / "b", other, gt)
    with pytest.raises(InputError, match="00007"):
        tracking_vertex_error(run2, cap2, 901, demo_asset)


def test_fitted_counts_and_their_correlation(tmp_path):
    cap, run = tmp_path / "capture", tmp_path / "run"
    cap.mkdir()
    truth = {"900": 60000, "901": 48000, "902": 130000}
    fitted = {"900": 50000, "901": 45000, "902": 90000}
    (cap / "capture.json").write_text(json.dumps({"participants": {k: {"gaussians": v} for k, v in truth.items()}}))
    for pid, n in fitted.items():
        (run / "work" / pid / "fit").mkdir(parents=True)
        (run / "work" / pid / "fit" / "record.json").write_text(json.dumps({"metrics": {"gaussians": n}}))
    res = fitted_gaussian_counts(run, cap)
    assert res["participants"]["902"] == {"fitted": 90000, "ground_truth": 130000}
    # Pearson r by hand: deviations (-19333, -31333, 50667) and (-11667, -16667, 28333)
    x, y = np.array([-19333.33, -31333.33, 50666.67]), np.array([-11666.67, -16666.67, 28333.33])
    assert res["pearson_r"] == pytest.approx((x @ y) / math.sqrt((x @ x) * (y @ y)), abs=1e-6)
    assert math.isnan(fitted_gaussian_counts(run, cap, [900])["pearson_r"])
    with pytest.raises(InputError, match="903"):
        fitted_gaussian_counts(run, cap, [903])
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_breakdown_finds_the_group_that_holds_the_error(demo_asset):
    from pointillist_data.tracking.accuracy import vertex_error_breakdown

    gt = _gt()
    # wrong neck pose and a wrong shape coefficient; expression and jaw exact
    bad = FlameParams(**{**gt.__dict__, "neck_pose": gt.neck_pose + 0.1,
                         "shape": gt.shape + np.eye(300, dtype=np.float32)[1]})
    b = vertex_error_breakdown(demo_asset, bad, gt)
    assert b["tracked"] > 1.0
    assert b["head_pose+shape"] == pytest.approx(0.0, abs=1e-6)
    assert b["expression"] == pytest.approx(b["tracked"], abs=1e-9) and b["jaw_eyes"] == pytest.approx(b["tracked"])
    assert 0 < b["head_pose"] < b["tracked"] and 0 < b["shape"] < b["tracked"]
