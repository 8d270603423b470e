"""Cameras, NeRSemble reading, VHAP export round trips, colour correction and masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pointillist_data.capture import (
    Camera,
    CameraError,
    NersembleError,
    NersembleSequence,
    apply_color_correction,
    foreground_mask,
    read_vhap_export,
    write_vhap_export,
)
from pointillist_data.capture.nersemble import ASSETS, SERIALS
from pointillist_data.capture.synthetic import make_rig
from pointillist_data.flame import FlameParams
from pointillist_data.viz import look_at_viewmat


def _cam(cx=41.3, cy=70.2, w=100, h=150):
    return Camera(look_at_viewmat(np.array([0.3, 0.1, 1.0]), np.zeros(3)), [[200.0, 0, cx], [0, 210.0, cy], [0, 0, 1]], w, h, "x")


def test_resize_and_crop_keep_projection_consistent():
    cam = _cam()
    pts = np.random.default_rng(0).normal(scale=0.05, size=(20, 3))
    uv, _ = cam.project(pts)
    small = cam.resized(50, 75)
    uv_s, _ = small.project(pts)
    np.testing.assert_allclose(uv_s, uv * [0.5, 0.5], atol=1e-9)  # continuous pixel coords scale
    crop = cam.cropped(10, 20, 60, 90)
    np.testing.assert_allclose(crop.project(pts)[0], uv - [10, 20], atol=1e-9)
    np.testing.assert_allclose(cam.center, [0.3, 0.1, 1.0], atol=1e-12)


def test_camera_validation_errors():
    with pytest.raises(CameraError, match="non-finite"):
        Camera(np.full((4, 4), np.nan), np.eye(3), 10, 10, "s1")
    with pytest.raises(CameraError, match="principal point"):
        _cam(cx=500.0)
    with pytest.raises(CameraError, match="rotation"):
        Camera(np.diag([1.0, 1.0, -1.0, 1.0]), [[10, 0, 5], [0, 10, 5], [0, 0, 1]], 10, 10, "s2")


def test_synthetic_capture_reads_back_its_cameras(synthetic_capture):
    root, cfg, summary = synthetic_capture
    seq = NersembleSequence(root, cfg.participants[0], cfg.sequence)
    assert seq.serials == SERIALS and seq.num_frames == cfg.timesteps and seq.image_size == (110, 160)
    rig = make_rig(cfg.scale, cfg.seed)
    for cam in rig:
        got = seq.cameras[cam.serial]
        np.testing.assert_allclose(got.world_to_cam, cam.world_to_cam, atol=1e-12)
        np.testing.assert_allclose(got.K, cam.K, atol=1e-9)
        assert (got.width, got.height) == (cam.width, cam.height)
    frames = seq.frames(SERIALS[0])
    assert frames.shape == (3, 160, 110, 3) and frames.dtype == np.uint8
    assert seq.background(SERIALS[0]).shape == (160, 110, 3)
    # background subtraction recovers the true alpha
    true_a = np.load(root / f"{cfg.participants[0]:03d}/ground_truth/{cfg.sequence}/alpha.npy").astype(np.float32)
    m = seq.masks(SERIALS[0], images=frames)
    gt = true_a[:, 0] > 0.5
    iou = (gt & (m > 0.5)).sum() / (gt | (m > 0.5)).sum()
    assert iou > 0.9, iou
    lmk = np.load(root / f"{cfg.participants[0]:03d}/ground_truth/{cfg.sequence}/landmark2d/GT/{SERIALS[0]}.npz")
    assert lmk["face_landmark_2d"].shape == (3, 68, 3) and lmk["bounding_box"].shape == (3, 5)


def test_nersemble_bad_input_names_participant_sequence_serial(synthetic_capture, tmp_path):
    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    bad = tmp_path / "bad"
    shutil.copytree(root / f"{pid:03d}", bad / f"{pid:03d}")
    calib_p = bad / ASSETS["calibration"].format(p_id=pid)
    calib = json.loads(calib_p.read_text())
    del calib["world_2_cam"][SERIALS[3]]
    calib_p.write_text(json.dumps(calib))
    with pytest.raises(NersembleError, match=rf"participant {pid:03d}, sequence {cfg.sequence}, serial {SERIALS[3]}"):
        NersembleSequence(bad, pid, cfg.sequence)
    calib = json.loads((root / ASSETS["calibration"].format(p_id=pid)).read_text())
    calib["intrinsics"][SERIALS[2]][0][2] = 1e6
    calib_p.write_text(json.dumps(calib))
    with pytest.raises(NersembleError, match=rf"{SERIALS[2]}.*principal point"):
        NersembleSequence(bad, pid, cfg.sequence)
    calib["intrinsics"][SERIALS[2]][0][2] = float("nan")
    calib_p.write_text(json.dumps(calib).replace("NaN", "NaN"))
    with pytest.raises(NersembleError, match="non-finite"):
        NersembleSequence(bad, pid, cfg.sequence)
    shutil.copy(root / ASSETS["calibration"].format(p_id=pid), calib_p)
    from pointillist_data.capture.video import read_video, write_video

    vid = bad / ASSETS["images"].format(p_id=pid, seq_name=cfg.sequence, serial=SERIALS[5])
    write_video(vid, read_video(vid)[:2])
    with pytest.raises(NersembleError, match="frame counts"):
        NersembleSequence(bad, pid, cfg.sequence)


@pytest.mark.parametrize("terms", [3, 8])
def test_color_correction_in_linear_srgb(terms):
    rng = np.random.default_rng(terms)
    img = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    ident = np.zeros((3, terms))
    ident[:, :3] = np.eye(3)
    np.testing.assert_array_equal(apply_color_correction(img, ident), img)
    ccm = ident.copy()
    ccm[0, 0] = 0.8  # scale red in linear light
    out = apply_color_correction(img.astype(np.float64) / 255, ccm)
    x = img[..., 0] / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4) * 0.8
    enc = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(out[..., 0], enc, atol=1e-9)
    np.testing.assert_allclose(out[..., 1:], img[..., 1:] / 255.0, atol=1e-9)


def test_foreground_mask_threshold():
    bg = np.full((4, 4, 3), 100, np.uint8)
    img = bg.copy()
    img[1, 1] = [100, 130, 100]  # 30/255 > 0.08
    img[2, 2] = [105, 100, 100]  # 5/255 < 0.08
    m = foreground_mask(img, bg)
    assert m[1, 1] == 1 and m[2, 2] == 0 and m.sum() == 1


def test_vhap_export_round_trip_off_centre(tmp_path):
    cams = [c for c in make_rig(1 / 20, seed=3)][:4]
    assert any(abs(c.K[0, 2] - c.width / 2) > 0.5 for c in cams)
    T = 3
    imgs = np.random.default_rng(0).integers(0, 255, size=(T, 4, 160, 110, 3), dtype=np.uint8)
    masks = np.random.default_rng(1).random((T, 4, 160, 110)) > 0.5
    params = FlameParams.zeros(T)
    params.jaw_pose[:, 0] = [0.0, 0.1, 0.2]
    write_vhap_export(tmp_path, cams, imgs, masks.astype(np.float32), params)
    frames = read_vhap_export(tmp_path)
    assert len(frames) == T * 4
    for f in frames:
        ref = cams[f.camera_index]
        np.testing.assert_allclose(f.camera.world_to_cam, ref.world_to_cam, atol=1e-9)
        np.testing.assert_allclose(f.camera.K, ref.K, atol=1e-9)
        m = masks[f.timestep_index, f.camera_index][..., None]
        np.testing.assert_array_equal(f.image(), np.where(m, imgs[f.timestep_index, f.camera_index], 255))  # over white
        np.testing.assert_array_equal(f.mask() > 0.5, masks[f.timestep_index, f.camera_index])
        assert FlameParams.load(f.flame_param_path).jaw_pose[0, 0] == pytest.approx(params.jaw_pose[f.timestep_index, 0])
    data = json.loads((tmp_path / "transforms.json").read_text())
    fr = data["frames"][5]
    cam = cams[fr["camera_index"]]
    assert fr["cy"] == pytest.approx(cam.height - cam.K[1, 2])  # VHAP's flipped cy
    # OpenGL camera-to-world: the camera looks along its -z axis
    c2w = np.array(fr["transform_matrix"])
    np.testing.assert_allclose(c2w[:3, 3], cam.center, atol=1e-9)
    np.testing.assert_allclose(-c2w[:3, 2], cam.world_to_cam[2, :3], atol=1e-9)
    split = {k: json.loads((tmp_path / f"transforms_{k}.json").read_text())["frames"] for k in ("train", "val", "test")}
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == T * 4
    assert {f["camera_index"] for f in split["val"]} == {3}  # VHAP: camera 8, else the last one
    assert FlameParams.load(tmp_path / "canonical_flame_param.npz").num_frames == 1


def test_layout_matches_official_package():
    official = pytest.importorskip("nersemble_data.constants")
    assert SERIALS == list(official.SERIALS)
    for group in ("per_person", "per_cam", "per_person_cam"):
        for k, v in official.ASSETS[group].items():
            assert ASSETS[k] == v


def test_capture_kind_tells_the_synthetic_capture_from_others(synthetic_capture, tmp_path):
    from pointillist_data.capture.synthetic import capture_kind

    root, _, _ = synthetic_capture
    assert capture_kind(root) == "synthetic"
    assert capture_kind(tmp_path) == "nersemble"  # no capture.json: a real capture's layout
    (tmp_path / "capture.json").write_text(json.dumps({"participants": {}}))  # someone else's JSON
    assert capture_kind(tmp_path) == "nersemble"
    (tmp_path / "capture.json").write_text("{ not json")
    assert capture_kind(tmp_path) == "nersemble"
    assert capture_kind("s3://bucket/nersemble") == "nersemble"
