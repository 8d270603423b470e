"""The first frame's Levenberg-Marquardt refinement (pointillist_data/tracking/refine.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointillist_data.capture.synthetic import make_rig
from pointillist_data.flame import FlameModel, FlameParams
from pointillist_data.tracking.config import TrackingConfig
from pointillist_data.tracking.stage import vertex_errors
from pointillist_data.tracking.tracker import FlameTracker, TrackingData


@pytest.fixture(scope="module")
def scaled_head(demo_asset):
    """One frame of a head whose first three identity coefficients are scaled by 1.33 (the
    styled synthetic identity 901's draw and gain), seen by the 16-camera synthetic rig; the
    landmarks are the true mesh's projected into every camera (the ground-truth files' kind)."""
    cams = make_rig(0.05)
    shape = np.zeros(300, np.float32)
    shape[: demo_asset.n_shape] = np.random.default_rng(1).normal(scale=0.8, size=demo_asset.n_shape)
    shape[:3] *= 1.33
    expr = np.zeros((1, 100), np.float32)
    expr[0, :8] = [0.05, -0.95, -1.18, -1.03, 1.18, 1.17, -0.92, -1.13]
    gt = FlameParams(rotation=np.array([[0.019, -0.021, 0.006]]), translation=np.array([[-0.002, 0.0006, -0.0035]]),
                     neck_pose=np.array([[0.049, 0.007, -0.037]]), jaw_pose=np.array([[0.012, 0.0, 0.0]]),
                     eyes_pose=np.zeros((1, 6)), shape=shape, expr=expr, timestep_id=np.array(["00000"]))
    with torch.no_grad():
        lm = FlameModel(demo_asset, dtype=torch.float64).forward_params(gt.to_torch(dtype=torch.float64))
    pts = lm["landmarks_ibug68"][0].numpy()
    uv = np.stack([c.project(pts)[0] for c in cams])  # (C, 68, 2)
    landmarks = np.concatenate([uv, np.ones((len(cams), 68, 1))], -1)[None].astype(np.float32)
    return TrackingData(cams, landmarks, timestep_ids=["00000"]), gt


def _mean_error_mm(asset, data, gt, **kw) -> float:
    cfg = TrackingConfig(first_frame_iters=250, frame_iters=0, global_iters=0, **kw)
    res = FlameTracker(asset, cfg).track(data)
    return float(vertex_errors(asset, res.params, gt).mean() * 1e3)


def test_refinement_recovers_the_scaled_head_that_adam_misses(scaled_head, demo_asset):
    data, gt = scaled_head
    adam = _mean_error_mm(demo_asset, data, gt, first_frame_lm_iters=0)
    refined = _mean_error_mm(demo_asset, data, gt, first_frame_lm_iters=10)
    print(f"first frame: Adam only {adam:.2f} mm, + 10 Levenberg-Marquardt iterations {refined:.2f} mm")
    # Adam fits the landmarks with a wrong shape and head pose; the refinement comes close to
    # the true head (exact landmarks: the shape prior, w_shape, keeps it from 0 mm; 0.3 mm
    # with w_shape 2e-6)
    assert adam > 2.0
    assert refined < min(1.2, adam / 2)


def test_refinement_needs_two_cameras(scaled_head, demo_asset):
    from pointillist_data.tracking.refine import refine_frame_lm

    data, _ = scaled_head
    one = TrackingData(data.cameras[:1], data.landmarks[:, :1], timestep_ids=["00000"])
    tracker = FlameTracker(demo_asset, TrackingConfig())
    tracker._setup(one)
    p = {"shape": torch.zeros(1, demo_asset.n_shape), "expr": torch.zeros(1, demo_asset.n_expr),
         **{k: torch.zeros(1, 3) for k in ("rotation", "neck_pose", "jaw_pose", "translation")},
         "eyes_pose": torch.zeros(1, 6)}
    assert refine_frame_lm(tracker, p, 0, ["rotation", "translation"], True, 5) is None
    assert all(float(v.abs().sum()) == 0 for v in p.values())  # untouched


def test_config_rejects_negative_refinement():
    with pytest.raises(ValueError, match="first_frame_lm_iters"):
        TrackingConfig(first_frame_lm_iters=-1)
