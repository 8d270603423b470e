"""Ground-truth renders of the synthetic capture under another identity's motion
(pointillist_data/capture/synthetic_truth.py), checked against the capture's own alpha and
against a moved camera."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest


def _rig(cfg, picks=(0, 8)):
    from pointillist_data.capture.synthetic import make_rig

    cams = [make_rig(cfg.scale, cfg.seed)[i] for i in picks]
    return (np.stack([c.world_to_cam for c in cams]), np.stack([c.K for c in cams]), cams[0].width, cams[0].height,
            list(picks))


def test_self_render_reproduces_the_captures_alpha(tiny_capture, demo_asset):
    from pointillist_data.capture.synthetic_truth import SyntheticTruth

    root, cfg = tiny_capture
    w2c, K, W, H, picks = _rig(cfg)
    truth = SyntheticTruth(root, demo_asset)
    # one render (85k Gaussians on the CPU renderer: seconds): the second identity, last timestep
    pid, t = truth.subjects[1], cfg.timesteps - 1
    alpha = np.load(root / pid / "ground_truth" / cfg.sequence / "alpha.npy").astype(np.float32)
    rgb, a = truth.render(pid, pid, f"{t:05d}", w2c, K, W, H, 1.0)
    assert rgb.shape == (2, H, W, 3) and rgb.dtype == np.uint8
    assert a.sum() > 100  # the head is in view
    assert np.abs(a - alpha[t][picks]).max() < 0.01  # float16 storage of the capture's alpha


def test_cross_render_takes_the_drivers_motion_and_the_targets_shape(tiny_capture, demo_asset, tmp_path):
    """A driver whose true motion is the target's own moved 2 cm along x (and who carries
    another identity's shape) renders exactly the target's own truth seen by cameras moved
    2 cm the other way: the driver's motion in the world frame, the target's shape."""
    from pointillist_data.capture.synthetic_truth import SyntheticTruth
    from pointillist_data.errors import InputError
    from pointillist_data.flame import FlameParams

    root, cfg = tiny_capture
    summary = json.loads((root / "capture.json").read_text())
    a, b = sorted(summary["participants"])[:2]
    cap = tmp_path / "cap"
    shutil.copytree(root / a / "ground_truth", cap / a / "ground_truth")
    moved = FlameParams.load(root / a / "ground_truth" / cfg.sequence / "flame_params.npz")
    moved.translation = np.asarray(moved.translation) + np.array([0.02, 0.0, 0.0])
    moved.shape = FlameParams.load(root / b / "ground_truth" / cfg.sequence / "flame_params.npz").shape
    moved.save(cap / "999" / "ground_truth" / cfg.sequence / "flame_params.npz")
    summary["participants"] = {a: summary["participants"][a], "999": {**summary["participants"][b]}}
    (cap / "capture.json").write_text(json.dumps(summary))
    truth = SyntheticTruth(cap, demo_asset)
    w2c, K, W, H, _ = _rig(cfg)
    shift = np.eye(4)
    shift[0, 3] = 0.02  # x_cam = w2c (x + d): the head moved by d, or the camera by -d
    rgb, al = truth.render(a, "999", "00000", w2c, K, W, H, 1.0)
    ref, ref_al = truth.render(a, a, "00000", w2c @ shift, K, W, H, 1.0)
    same, _ = truth.render(a, a, "00000", w2c, K, W, H, 1.0)
    assert np.abs(al - ref_al).max() < 1e-3
    assert np.abs(rgb.astype(int) - ref.astype(int)).max() <= 2
    assert np.abs(rgb.astype(int) - same.astype(int)).max() > 50  # it did move
    with pytest.raises(InputError, match="no timestep"):
        truth.render(a, "999", "00099", w2c, K, W, H)
    with pytest.raises(InputError, match="no identity"):
        truth.render("123", a, "00000", w2c, K, W, H)
