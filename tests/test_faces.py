"""Faces of any size: a small face in a large monocular video is found (face detector, crop,
face mesh, mapped back) and tracked in every frame; frames without a face are flagged by
file and frame; no face at all is one error with a hint; `track --image` on grey / RGBA."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from pointillist_data.capture.landmarks_io import load_landmarks
from pointillist_data.capture.nersemble import ASSETS
from pointillist_data.capture.video import read_video, write_video

pytest.importorskip("mediapipe")

SERIAL = "222200037"
CANVAS = (1280, 720)
ORIGIN = (800, 300)  # where the 2x upscaled 110 x 160 frame is pasted
# MediaPipe face-mesh index -> iBUG-68 index of the same point: outer eye corners, mouth
# corners, nose tip, chin
PAIRS = [(33, 36), (263, 45), (61, 48), (291, 54), (1, 30), (152, 8)]


def _paste(frame: np.ndarray) -> np.ndarray:
    c = np.full((CANVAS[1], CANVAS[0], 3), 110, np.uint8)
    big = np.asarray(Image.fromarray(frame).resize((220, 320), Image.BICUBIC))
    c[ORIGIN[1]:ORIGIN[1] + 320, ORIGIN[0]:ORIGIN[0] + 220] = big
    return c


@pytest.fixture(scope="module")
def small_face(synthetic_capture, tmp_path_factory):
    """A 1280 x 720 video of one synthetic camera's frames, the face ~56 pixels wide (4 %
    of the width), and the true iBUG-68 landmarks in its pixels."""
    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    v = read_video(root / ASSETS["images"].format(p_id=pid, seq_name=cfg.sequence, serial=SERIAL))
    gt = load_landmarks(root / f"{pid:03d}/ground_truth/{cfg.sequence}/landmark2d/GT/{SERIAL}.npz",
                        v.shape[2], v.shape[1])  # VHAP's x / w, y / h -> pixels of the 110 x 160 frames
    d = tmp_path_factory.mktemp("small_face")
    video = write_video(d / "clip.mp4", np.stack([_paste(f) for f in v]))
    blank = write_video(d / "blank.mp4", np.full((2, 240, 320, 3), 90, np.uint8))
    gaps = write_video(d / "gaps.mp4", np.stack([_paste(v[0]), np.full_like(_paste(v[0]), 110), _paste(v[2])]))
    return {"video": video, "blank": blank, "gaps": gaps, "gt": gt[..., :2] * 2 + ORIGIN, "frames": len(v)}


def test_small_face_video_tracks_every_frame(small_face, tmp_path):
    from pointillist_data.tracking.monocular import video_landmarks

    gt, n = small_face["gt"], small_face["frames"]
    face_width = gt[:, :17, 0].max(1) - gt[:, :17, 0].min(1)
    assert (face_width < 0.15 * CANVAS[0]).all()  # the premise: a small face in a large frame
    lm, missing = video_landmarks(small_face["video"], list(range(n)), CANVAS)
    assert missing == []
    for t in range(n):  # mapped back to the frame: landmarks sit on the true face points
        iod = np.linalg.norm(gt[t, 36] - gt[t, 45])
        err = np.mean([np.linalg.norm(lm[t, a, :2] - gt[t, b]) for a, b in PAIRS]) / iod
        assert err < 0.3, (t, err)  # a wrong crop offset or scale would be off by whole faces
    cfg = tmp_path / "track.json"
    cfg.write_text(json.dumps({"first_frame_iters": 120, "frame_iters": 40, "global_iters": 10,
                               "render_cameras": 0}))
    r = CliRunner().invoke(app, ["track", "--video", str(small_face["video"]), "--out", str(tmp_path / "t"),
                                 "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "t" / "tracking_record.json").read_text())
    assert rec["metrics"]["frames_tracked"] == n and rec["no_face"] == [] and not rec["flagged"]
    assert f"tracked {n}/{n} frames" in r.output and (tmp_path / "t" / "export" / "transforms.json").exists()


def test_frames_without_a_face_are_flagged_and_none_is_an_error(small_face, tmp_path):
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.tracking.config import TrackingConfig
    from pointillist_data.tracking.monocular import track_video

    cfg = TrackingConfig(first_frame_iters=20, frame_iters=5, global_iters=0, render_cameras=0)
    rec = track_video(small_face["gaps"], resolve_flame_asset(), tmp_path / "g", cfg)
    assert rec["no_face"] == [f"{small_face['gaps']}: no face in frame 1"]
    assert rec["kept"] == [0, 2] and any("face found in 0 camera" in f["reason"] for f in rec["flagged"])
    r = CliRunner().invoke(app, ["track", "--video", str(small_face["blank"]), "--out", str(tmp_path / "b")])
    err = (r.stderr or r.output).strip().splitlines()
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert err[0].startswith(f"error: {small_face['blank']}: no face found in any of the 2 frame(s)")
    assert "--crop" in err[1] and "--scale" in err[1]


def test_track_image_accepts_grey_and_rgba_portraits(tmp_path):
    skimage = pytest.importorskip("skimage")
    from pointillist_data.tracking.landmarks import MediaPipeDetector, to_rgb

    rgb = skimage.data.astronaut()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(to_rgb(rgba), rgb)
    assert to_rgb(grey).shape == rgb.shape and (to_rgb(grey)[..., 0] == grey).all()
    assert to_rgb(rgb.astype(np.float32) / 255).dtype == np.uint8
    det = MediaPipeDetector()
    np.testing.assert_allclose(det.detect(rgba), det.detect(rgb))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = tmp_path / "fit"
    r = CliRunner().invoke(app, ["track", "--image", str(tmp_path / "grey.png"), "--out", str(out),
                                 "--iters", "250,0,60"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "tracking_record.json").read_text())
    assert rec["error_interocular"] < 0.05 and rec["metrics"]["frames_tracked"] == 1
    for f in ("tracked_flame_params_60.npz", "config.json", "overlay.png", "export/transforms.json"):
        assert (out / f).exists(), f
