"""Monocular video tracking on a face crop: crop intrinsics, resolution independence against the
synthetic clip's ground truth, progress from the start, and the frame cache removed on failure."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from pointillist_data.capture.camera import Camera
from pointillist_data.tracking.config import TrackingConfig
from pointillist_data.tracking.face_crop import FaceCrop, crop_intrinsics, face_crop_box

# landmark-only budgets plus a few rendered global iterations: enough to place the head
TINY = dict(rigid_iters=40, first_frame_iters=80, frame_iters=25, global_iters=4, render_cameras=1, face_crop_size=128,
            checkpoint_every=0)


def test_crop_intrinsics_against_hand_computed_reference():
    K = np.array([[1000.0, 0.5, 960.0], [0.0, 1100.0, 540.0], [0.0, 0.0, 1.0]])
    # box [700, 1100) x [300, 700) resampled to 512: s = 512 / 400 = 1.28
    # fx' = 1.28 * 1000, fy' = 1.28 * 1100, skew' = 1.28 * 0.5,
    # cx' = 1.28 * (960 - 700) = 332.8, cy' = 1.28 * (540 - 300) = 307.2
    ref = np.array([[1280.0, 0.64, 332.8], [0.0, 1408.0, 307.2], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(crop_intrinsics(K, 700, 300, 400, 512), ref, atol=1e-9)
    crop = FaceCrop(700, 300, 400, 512)
    cam = Camera(np.eye(4), K, 1920, 1080, "video")
    cc = crop.camera(cam)
    assert (cc.width, cc.height) == (512, 512)
    np.testing.assert_allclose(cc.K, ref, atol=1e-9)
    np.testing.assert_allclose(crop.frame_camera(cc, 1920, 1080).K, K, atol=1e-9)  # the inverse
    # landmarks follow the same map: the frame's principal point lands on the crop's
    lm = np.array([[[960.0, 540.0, 1.0], [700.0, 300.0, 0.0]]])
    np.testing.assert_allclose(crop.landmarks(lm)[0], [[332.8, 307.2, 1.0], [0.0, 0.0, 0.0]], atol=1e-4)


@pytest.mark.parametrize("side", [200, 900])  # upsampled to 512, downsampled to 512
def test_crop_image_matches_crop_camera(side):
    """A point projected by the frame's camera is drawn as a small blob (pixel centres at +0.5);
    in the resampled crop, the blob's centroid sits where the crop camera projects the point."""
    W, H = 1920, 1080
    cam = Camera(np.eye(4), [[1500.0, 0, 941.3], [0, 1480.0, 552.7], [0, 0, 1]], W, H, "video")
    X = np.array([[0.031, -0.017, 1.0]])
    uv, _ = cam.project(X)
    u, v = uv[0]
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    sigma = 0.01 * side  # a few crop pixels wide either way
    blob = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2))
    frame = (blob * 255 + 0.5).astype(np.uint8)
    crop = FaceCrop(int(u) - side // 2 + 7, int(v) - side // 2 - 5, side, 512)
    img = crop.image(frame).astype(np.float64)
    cy, cx = np.mgrid[0:512, 0:512] + 0.5
    w = np.where(img > 20, img, 0.0)
    centroid = np.array([(w * cx).sum() / w.sum(), (w * cy).sum() / w.sum()])
    expect, _ = crop.camera(cam).project(X)
    np.testing.assert_allclose(centroid, expect[0], atol=0.15)


def test_face_crop_box_holds_every_frame_and_stays_in_the_frame():
    lm = np.zeros((3, 5, 3))
    lm[..., 2] = 1
    lm[0, :, :2] = [[100, 100], [140, 100], [120, 130], [110, 150], [130, 150]]  # 40 x 50 face
    lm[1, :, :2] = lm[0, :, :2] + [30, 0]  # moves right
    lm[2] = 0  # no face
    box = face_crop_box(lm, 640, 360, 256, padding=0.5)
    # union x 100..170, y 100..150, margin 0.5 * 50 = 25 on each side: side ceil(70 + 50) = 120
    assert box.side == 120 and box.size == 256
    assert box.x0 <= 100 - 25 and box.x0 + box.side >= 170 + 25
    assert box.y0 <= 100 - 25 + 10 and box.y0 + box.side >= 150 + 10
    edge = face_crop_box(lm - [[[95, 0, 0]]] * (lm[..., 2:] > 0), 640, 360, 256)  # face at the left edge
    assert edge.x0 == 0
    with pytest.raises(ValueError, match="no landmarks"):
        face_crop_box(np.zeros((2, 5, 3)), 640, 360)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, demo_asset):
    from pointillist_data.capture.synthetic_video import make_synthetic_video, upscale_video

    d = tmp_path_factory.mktemp("clip")
    sv = make_synthetic_video(d, demo_asset, frames=3, size=(320, 180), seed=3)
    return sv, upscale_video(sv.video, d / "clip_x3.mp4", (960, 540))


def test_monocular_tracking_is_the_same_at_two_resolutions(clip, demo_asset, tmp_path):
    import torch

    from pointillist_data.flame import FlameParams
    from pointillist_data.flame.model import FlameModel
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.tracking.monocular import track_video
    from pointillist_data.tracking.stage import face_region, vertex_errors

    sv, big = clip
    cfg = TrackingConfig(**TINY)
    recs, params = [], []
    for k, video in enumerate((sv.video, big)):
        out = tmp_path / f"r{k}"
        rec = track_video(video, demo_asset, out, cfg, landmarks=sv.landmarks)
        assert json.loads((out / "tracking_record.json").read_text())["metrics"] == rec["metrics"]
        recs.append(rec)
        params.append(FlameParams.load(find_tracked_params(out)))
        assert params[-1].image_size.tolist() == [128, 128]  # the tracker and export work on the crop
        assert not list(out.glob(".frames-*"))
    # the crop covers the same part of the scene (3x the pixels), at the same size
    a, b = (r["face_crop"] for r in recs)
    assert abs(b["side"] / a["side"] - 3) < 0.05 and a["size"] == b["size"] == 128
    # % of the inter-ocular distance, checked against the ground-truth landmarks (iBUG 36, 45)
    with np.load(sv.landmarks) as z:
        gt_lm = z["face_landmark_2d"]
    for r, s in zip(recs, (1, 3), strict=True):
        iod = np.linalg.norm((gt_lm[:, 36, :2] - gt_lm[:, 45, :2]) * [320 * s, 180 * s], axis=-1).mean()
        assert r["metrics"]["landmark_error_iod_pct"] == pytest.approx(
            100 * r["metrics"]["landmark_error_video_px_mean"] / iod, rel=0.02)
        assert r["metrics"]["landmark_error_iod_pct"] < 3.0
    # same result at both resolutions, and near the ground truth: up to depth, what one
    # camera sees least (a larger head further away projects alike), so the face region is
    # compared after moving it to the true centroid, and the depth error is bounded apart
    face = face_region(demo_asset, sv.params.shape)
    between = vertex_errors(demo_asset, params[0], params[1])
    print(f"between resolutions: face mean {between[:, face].mean() * 1e3:.3f} mm")
    assert between[:, face].mean() < 2e-3
    model = FlameModel(demo_asset, dtype=torch.float64)
    with torch.no_grad():
        gt = model.forward_params(sv.params.to_torch(dtype=torch.float64))["vertices"].numpy()[:, face]
        for p in params:
            v = model.forward_params(p.to_torch(dtype=torch.float64))["vertices"].numpy()[:, face]
            off = v.mean(1, keepdims=True) - gt.mean(1, keepdims=True)
            centred = np.linalg.norm(v - off - gt, axis=-1).mean()
            print(f"vs ground truth: face {centred * 1e3:.2f} mm once centred, offsets {np.round(off[:, 0] * 1e3, 1)} mm")
            # (measured 3.7 mm, up to 1.5 / 52 mm offsets, with this budget)
            assert centred < 5e-3
            assert np.abs(off[:, 0, :2]).max() < 4e-3 and np.abs(off[:, 0, 2]).max() < 0.07  # 7 % of the 1 m depth


class _Recorder:
    """A Progress that records events in order."""

    def __init__(self):
        from pointillist_data.progress import Progress

        outer = self

        class P(Progress):
            def log(self, message):
                outer.events.append(("log", message))

            def _opened(self, task):
                outer.events.append(("task", task.description))

        self.events: list = []
        self.progress = P()


@pytest.mark.parametrize("where", ["decode", "track", "sigterm"])
def test_frame_cache_removed_on_failure(clip, demo_asset, tmp_path, monkeypatch, where):
    """Fault injection: a video that fails mid-decode, Ctrl-C and SIGTERM during the tracking."""
    from pointillist_data.capture.video import VideoError
    from pointillist_data.tracking import monocular

    sv, _ = clip
    out = tmp_path / "out"
    if where == "decode":
        real = monocular.iter_video

        def broken(*a, **kw):
            for k, item in enumerate(real(*a, **kw)):
                if k == 1:
                    raise VideoError(f"{a[0]}: frame 1 damaged (injected)")
                yield item

        monkeypatch.setattr(monocular, "iter_video", broken)
        expected = VideoError
    else:
        def interrupted(self, data, progress=None, checkpoint=None):
            assert list(out.glob(".frames-*/images"))  # the cache exists while tracking
            if where == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the signal arrives before this ends
            raise KeyboardInterrupt

        monkeypatch.setattr(monocular.FlameTracker, "track", interrupted)
        expected = SystemExit if where == "sigterm" else KeyboardInterrupt
    rec = _Recorder()
    with pytest.raises(expected) as info:
        monocular.track_video(sv.video, demo_asset, out, TrackingConfig(**TINY), landmarks=sv.landmarks,
                              progress=rec.progress)
    assert info.value is not None  # the traceback (holding every frame's locals) is still alive here
    assert out.is_dir() and not list(out.glob(".frames-*"))
    assert where != "sigterm" or (info.value.code == 143 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    # progress from the first second: a line naming the video before any work
    assert rec.events[0][0] == "log" and sv.video.name in rec.events[0][1]


def test_face_crop_config_is_validated():
    with pytest.raises(ValueError, match="face_crop_size"):
        TrackingConfig(face_crop_size=32)
    with pytest.raises(ValueError, match="face_crop_padding"):
        TrackingConfig(face_crop_padding=-0.1)
    assert TrackingConfig().face_crop_size == 512
