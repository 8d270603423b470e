"""Files VHAP and GaussianAvatars read unchanged, and their outputs imported.

Every upstream reader and writer here is written in the test from the upstream projects'
documented behaviour (VHAP ``vhap/data/video_dataset.py``, ``vhap/util/landmark_detector_star.py``,
``vhap/export_as_nerf_dataset.py``, ``vhap/model/tracker.py``; GaussianAvatars
``scene/gaussian_model.py``, ``scene/flame_gaussian_model.py``, ``scene/dataset_readers.py``),
never by calling the code under test.
"""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import TINY
from plyfile import PlyData, PlyElement

from pointillist_data.capture import write_vhap_export
from pointillist_data.capture.landmarks_io import LandmarkError, load_landmarks, write_landmarks
from pointillist_data.capture.nersemble import ASSETS, SERIALS
from pointillist_data.capture.synthetic import make_rig
from pointillist_data.capture.video import read_video
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.flame import FlameParams
from pointillist_data.gaussians import BoundGaussians, GaussianPlyError, read_ply, write_ply
from pointillist_data.interop import InteropError
from pointillist_data.manifests import validate_manifest
from pointillist_data.tracking.landmarks import FileLandmarks, detect_sequence

GA_KEYS = {"shape", "expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "static_offset",
           "dynamic_offset"}
VHAP_FRAME_KEYS = {"timestep_index", "timestep_index_original", "timestep_id", "camera_index", "camera_id", "cx", "cy",
                   "fl_x", "fl_y", "h", "w", "camera_angle_x", "camera_angle_y", "transform_matrix", "file_path",
                   "fg_mask_path", "flame_param_path"}
VHAP_TIMESTEP_KEYS = {"translation", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr"}
GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


# ------------------------------------------------------------------ upstream readers (test-side)
def vhap_read_landmarks(path, w, h):
    """VHAP's video_dataset: -1 anywhere in x, y -> confidence 0, else 1; then x * w, y * h."""
    lm = np.load(path)["face_landmark_2d"].astype(np.float64)
    out = lm.copy()
    for t in range(len(lm)):
        out[t, :, 2] = 0.0 if (lm[t, :, :2] == -1).sum() > 0 else 1.0
    out[..., 0] *= w
    out[..., 1] *= h
    return out


def ga_read_ply(path, max_sh_degree):
    """GaussianAvatars' GaussianModel.load_ply (the parts that can fail)."""
    el = PlyData.read(str(path)).elements[0]
    xyz = np.stack([np.asarray(el[k]) for k in ("x", "y", "z")], 1)
    names = sorted([p.name for p in el.properties if p.name.startswith("f_rest_")], key=lambda x: int(x.split("_")[-1]))
    assert len(names) == 3 * (max_sh_degree + 1) ** 2 - 3
    rest = np.stack([np.asarray(el[n]) for n in names], 1).reshape(len(xyz), 3, (max_sh_degree + 1) ** 2 - 1)
    dc = np.stack([np.asarray(el[f"f_dc_{i}"]) for i in range(3)], 1)
    rot_names = sorted([p.name for p in el.properties if p.name.startswith("rot")], key=lambda x: int(x.split("_")[-1]))
    rot = np.stack([np.asarray(el[n]) for n in rot_names], 1)
    binding = np.asarray(el["binding_0"]).astype(np.int32)
    return xyz, dc, rest, rot, binding


def ga_load_flame_param(path):
    """GaussianAvatars' FlameGaussianModel.load_ply: torch.from_numpy on every entry."""
    return {k: torch.from_numpy(v) for k, v in np.load(str(path)).items()}


# ------------------------------------------------------------------ item 1: landmarks
def test_landmarks_are_written_in_vhap_units(tmp_path):
    rng = np.random.default_rng(0)
    W, H = 110, 160
    px = np.concatenate([rng.uniform([5, 5], [W - 5, H - 5], (3, 68, 2)), np.ones((3, 68, 1))], -1)
    px[1, :, 2] = 0.0  # no face in frame 1
    px[2, 7, 2] = 0.0  # one landmark not seen in frame 2
    path = write_landmarks(tmp_path / "cam.npz", px, W, H)
    z = np.load(path)
    lm, bb = z["face_landmark_2d"], z["bounding_box"]
    assert lm.shape == (3, 68, 3) and bb.shape == (3, 5)
    np.testing.assert_allclose(lm[0, :, 0], px[0, :, 0] / W, rtol=1e-6)
    np.testing.assert_allclose(lm[0, :, 1], px[0, :, 1] / H, rtol=1e-6)
    assert (lm[1] == -1).all() and (bb[1] == -1).all()
    vis = px[2, :, 2] > 0
    np.testing.assert_allclose(bb[2], [px[2, vis, 0].min() / W, px[2, vis, 1].min() / H, px[2, vis, 0].max() / W,
                                       px[2, vis, 1].max() / H, 1.0], rtol=1e-6)
    vhap = vhap_read_landmarks(path, W, H)
    np.testing.assert_allclose(vhap[[0, 2], :, :2], px[[0, 2], :, :2], rtol=1e-6)
    assert (vhap[1, :, 2] == 0).all() and (vhap[0, :, 2] == 1).all()
    ours = load_landmarks(path, W, H)
    np.testing.assert_allclose(ours[..., :2][[0, 2]], px[[0, 2], :, :2], rtol=1e-6)
    assert (ours[1, :, 2] == 0).all() and ours[2, 7, 2] == 0 and ours[2, 8, 2] == 1


def test_vhap_landmark_file_is_read_and_pixel_files_must_say_so(tmp_path):
    rng = np.random.default_rng(1)
    W, H = 110, 160
    norm = rng.uniform(0.2, 0.8, (2, 68, 2))
    lm = np.concatenate([norm, np.ones((2, 68, 1))], -1).astype(np.float32)
    lm[1] = -1  # STAR found no face
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "cam_a.npz", face_landmark_2d=lm, bounding_box=np.full((2, 5), -1, np.float32))
    got = load_landmarks(src / "cam_a.npz", W, H)
    np.testing.assert_allclose(got[0, :, :2], norm[0] * [W, H], rtol=1e-5)
    assert (got[1, :, 2] == 0).all()
    # a file in pixels that does not say so is refused, naming the file
    pixels = lm.copy()
    pixels[0, :, :2] *= [W, H]
    np.savez(src / "cam_b.npz", face_landmark_2d=pixels)
    with pytest.raises(LandmarkError, match=r"cam_b\.npz: coordinates span .* not VHAP's normalised"):
        load_landmarks(src / "cam_b.npz", W, H)
    with pytest.raises(LandmarkError, match=r"cam_b\.npz"):
        detect_sequence(["cam_b"], None, FileLandmarks(src), tmp_path / "out")
    # ... and read as pixels when it does say so; the landmarks step re-writes it in VHAP's units
    np.savez(src / "cam_b.npz", face_landmark_2d=pixels, coordinate_units=np.array("pixels"))
    np.testing.assert_allclose(load_landmarks(src / "cam_b.npz", W, H), got, rtol=1e-5)
    written = detect_sequence(["cam_a", "cam_b"], None, FileLandmarks(src), tmp_path / "out",
                              image_sizes={"cam_a": (W, H), "cam_b": (W, H)}).written
    for serial in ("cam_a", "cam_b"):
        np.testing.assert_allclose(vhap_read_landmarks(written[serial], W, H)[0], got[0], rtol=1e-5)
        assert "coordinate_units" not in np.load(written[serial]).files


# ------------------------------------------------------------------ items 2 and 3: GaussianAvatars files
def _gaussians(n=50, degree=0, seed=0):
    rng = np.random.default_rng(seed)
    return BoundGaussians(rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32) - 4,
                          (rng.normal(size=(n, 4)) * rng.uniform(0.5, 2, (n, 1))).astype(np.float32),
                          rng.normal(size=n).astype(np.float32),
                          rng.normal(size=(n, (degree + 1) ** 2, 3)).astype(np.float32), rng.integers(0, 10144, n))


@pytest.mark.parametrize("degree", [0, 1])
def test_ply_reads_in_gaussian_avatars_with_its_default_sh_degree(tmp_path, degree):
    g = _gaussians(degree=degree, seed=degree)
    path = write_ply(g, tmp_path / "point_cloud.ply", 10144, sh_degree=3)
    xyz, dc, rest, rot, binding = ga_read_ply(path, max_sh_degree=3)  # GaussianAvatars' default --sh_degree 3
    np.testing.assert_array_equal(dc, g.sh[:, 0])
    for k in range(1, 16):  # rest[p, channel, k - 1] is coefficient k of that channel
        want = g.sh[:, k] if k < (degree + 1) ** 2 else np.zeros((len(g), 3))
        np.testing.assert_array_equal(rest[:, :, k - 1], want)
    np.testing.assert_allclose(rot, g.rotation / np.linalg.norm(g.rotation, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(binding, g.binding)
    back = read_ply(path, 10144)
    assert back.sh_degree == 3 and np.abs(back.sh[:, (degree + 1) ** 2:]).max(initial=0) == 0
    with pytest.raises(AssertionError):
        ga_read_ply(write_ply(g, tmp_path / "default.ply"), max_sh_degree=3)  # why the option exists
    with pytest.raises(GaussianPlyError, match="SH degree"):
        write_ply(_gaussians(degree=2), tmp_path / "x.ply", sh_degree=1)
    with pytest.raises(ValueError, match="ply_sh_degree"):
        FittingConfig(sh_degree=2, ply_sh_degree=1)


def test_flame_param_loads_in_gaussian_avatars(tmp_path):
    T, V = 4, 5143
    rng = np.random.default_rng(2)
    p = FlameParams(rotation=rng.normal(size=(T, 3)) * 0.1, translation=rng.normal(size=(T, 3)) * 0.01,
                    neck_pose=np.zeros((T, 3)), jaw_pose=np.zeros((T, 3)), eyes_pose=np.zeros((T, 6)),
                    shape=rng.normal(size=300), expr=rng.normal(size=(T, 100)),
                    timestep_id=np.array([f"{t:05d}" for t in range(T)]), image_size=np.array([160, 110]))
    p.save(tmp_path / "vhap_layout.npz")
    with pytest.raises(TypeError):  # what GaussianAvatars did with the old file: string timestep ids
        ga_load_flame_param(tmp_path / "vhap_layout.npz")
    ga = ga_load_flame_param(p.save_gaussian_avatars(tmp_path / "flame_param.npz", V))
    assert set(ga) == GA_KEYS and all(v.dtype == torch.float32 for v in ga.values())
    assert ga["dynamic_offset"].shape == (T, V, 3) and ga["static_offset"].shape == (1, V, 3)
    assert ga["expr"].shape[0] == T and ga["dynamic_offset"][[2]].shape == (1, V, 3)
    np.testing.assert_allclose(ga["rotation"].numpy(), p.rotation)
    # --motion_path keeps the float32 entries only: all of them
    assert {k for k, v in np.load(tmp_path / "flame_param.npz").items() if v.dtype == np.float32} == GA_KEYS
    # GaussianAvatars writes static_offset (V, 3) with --disable_flame_static_offset
    np.savez(tmp_path / "ga_no_static.npz", **{**{k: v.numpy() for k, v in ga.items()},
                                               "static_offset": np.zeros((V, 3), np.float32)})
    assert FlameParams.load(tmp_path / "ga_no_static.npz").static_offset.shape == (1, V, 3)


# ------------------------------------------------------------------ item 4: VHAP's export
def vhap_split(T, C):
    """VHAP's split_json: first ceil(0.7 T) timesteps train (val camera 8, else the last)."""
    n_train = int(np.ceil(T * 0.7))
    val = None if C == 1 else (8 if C > 8 else C - 1)
    return list(range(n_train)), val


@pytest.mark.parametrize("C", [16, 5, 1])
def test_export_follows_vhap(tmp_path, C):
    cams = make_rig(1 / 20, seed=3)[:C]
    T = 4
    rng = np.random.default_rng(C)
    imgs = rng.integers(0, 255, size=(T, C, 160, 110, 3), dtype=np.uint8)
    params = FlameParams.zeros(T)
    params.translation = np.array([[0.01, -0.02, 0.03]]) + rng.normal(size=(T, 3)) * 0.01
    params.timestep_id = np.array([f"{10 * t:05d}" for t in range(T)])
    masks = rng.random((T, C, 160, 110))
    write_vhap_export(tmp_path, cams, imgs, masks, params)
    db = json.loads((tmp_path / "transforms.json").read_text())
    assert {"frames", "cx", "cy", "fl_x", "fl_y", "h", "w", "camera_angle_x", "camera_angle_y", "timestep_indices",
            "camera_indices"} == set(db)
    assert all(set(f) == VHAP_FRAME_KEYS for f in db["frames"])
    train_ts, val = vhap_split(T, C)
    split = {k: json.loads((tmp_path / f"transforms_{k}.json").read_text()) for k in ("train", "val", "test")}
    assert split["train"]["timestep_indices"] == split["val"]["timestep_indices"] == train_ts == [0, 1, 2]
    assert sorted({(f["timestep_index"], f["camera_index"]) for f in split["train"]["frames"]}) == \
        [(t, c) for t in train_ts for c in range(C) if c != val]
    assert {(f["timestep_index"], f["camera_index"]) for f in split["val"]["frames"]} == \
        ({(t, val) for t in train_ts} if val is not None else set())
    assert {(f["timestep_index"], f["camera_index"]) for f in split["test"]["frames"]} == {(3, c) for c in range(C)}
    mean = params.translation.mean(0)
    X = rng.normal(scale=0.05, size=(20, 3))  # head points around the FLAME origin
    for f in db["frames"]:
        t, c = f["timestep_index"], f["camera_index"]
        assert f["timestep_index_original"] == t and f["timestep_id"] == params.timestep_id[t]
        step = np.load(tmp_path / f["flame_param_path"])
        assert set(step.files) == VHAP_TIMESTEP_KEYS and step["expr"].shape == (1, 100)
        np.testing.assert_allclose(step["translation"][0], params.translation[t] - mean, atol=1e-6)  # relocated
        # GaussianAvatars' readCamerasFromTransforms, with the export's own intrinsics
        c2w = np.array(f["transform_matrix"])
        c2w[:3, 1:3] *= -1
        w2c = np.linalg.inv(c2w)
        pc = (X + step["translation"][0]) @ w2c[:3, :3].T + w2c[:3, 3]
        uv = pc[:, :2] / pc[:, 2:] * [f["fl_x"], f["fl_y"]] + [f["cx"], f["h"] - f["cy"]]
        np.testing.assert_allclose(uv, cams[c].project(X + params.translation[t])[0], atol=1e-6)
        assert f["camera_angle_x"] == pytest.approx(2 * math.atan(f["w"] / (2 * f["fl_x"])))
        if t == 0:  # VHAP composites over white with the 8-bit alpha map: w * fg + (1 - w) * 255, truncated
            alpha = iio.imread(tmp_path / f["fg_mask_path"])
            np.testing.assert_array_equal(alpha, np.round(masks[t, c] * 255).astype(np.uint8))
            w = alpha[..., None] / 255
            np.testing.assert_array_equal(iio.imread(tmp_path / f["file_path"]),
                                          (w * imgs[t, c] + (1 - w) * 255).astype(np.uint8))
    canon = np.load(tmp_path / "canonical_flame_param.npz")
    assert canon["jaw_pose"].tolist() == [[pytest.approx(0.3), 0.0, 0.0]] and not canon["expr"].any()


# ------------------------------------------------------------------ item 7: imports
def _write_vhap_folders(root, capture, pid, cams_used, asset, epoch=30):
    """A VHAP export and tracking folder as VHAP writes them, from a synthetic participant."""
    made = json.loads((capture / "capture.json").read_text())["config"]  # the capture's own rig (test_capture checks)
    rig = {c.serial: c for c in make_rig(made["scale"], seed=made["seed"])}
    gt = FlameParams.load(capture / f"{pid:03d}/ground_truth/EXP-1-head/flame_params.npz")
    alpha = np.load(capture / f"{pid:03d}/ground_truth/EXP-1-head/alpha.npy").astype(np.float32)
    T, V = gt.num_frames, asset.num_vertices
    export, tracking = root / "export", root / "tracking" / "2025-01-01_00-00-00"
    tracking.mkdir(parents=True)
    mean = gt.translation.mean(0)
    frames, videos = [], {}
    for t in range(T):
        step = {"translation": gt.translation[[t]] - mean, "rotation": gt.rotation[[t]], "neck_pose": gt.neck_pose[[t]],
                "jaw_pose": gt.jaw_pose[[t]], "eyes_pose": gt.eyes_pose[[t]], "shape": gt.shape, "expr": gt.expr[[t]],
                "static_offset": np.zeros((1, V, 3), np.float32)}
        (export / "flame_param").mkdir(parents=True, exist_ok=True)
        np.savez(export / f"flame_param/{t:05d}.npz", **step)
        for c, serial in enumerate(cams_used):
            cam = rig[serial]
            if serial not in videos:
                videos[serial] = read_video(capture / ASSETS["images"].format(p_id=pid, seq_name="EXP-1-head",
                                                                              serial=serial))
            img = videos[serial][t]
            for sub, data in (("images", img), ("fg_masks", (alpha[t, SERIALS.index(serial)] * 255).astype(np.uint8))):
                (export / sub).mkdir(exist_ok=True)
                iio.imwrite(export / f"{sub}/{t:05d}_{c:02d}.png", data)
            c2w = np.linalg.inv(cam.world_to_cam)
            c2w[:3, 1:3] *= -1  # OpenCV -> OpenGL camera axes
            c2w[:3, 3] -= mean  # VHAP moves the head to the origin
            K = cam.K
            frames.append({"timestep_index": t, "timestep_index_original": t, "timestep_id": f"{t:05d}",
                           "camera_index": c, "camera_id": serial, "cx": K[0, 2], "cy": cam.height - K[1, 2],
                           "fl_x": K[0, 0], "fl_y": K[1, 1], "h": cam.height, "w": cam.width,
                           "camera_angle_x": 2 * math.atan(cam.width / (2 * K[0, 0])),
                           "camera_angle_y": 2 * math.atan(cam.height / (2 * K[1, 1])),
                           "transform_matrix": c2w.tolist(), "file_path": f"images/{t:05d}_{c:02d}.png",
                           "fg_mask_path": f"fg_masks/{t:05d}_{c:02d}.png", "flame_param_path": f"flame_param/{t:05d}.npz"})
    train_ts, val = vhap_split(T, len(cams_used))
    shared = {k: frames[-1][k] for k in ("cx", "cy", "fl_x", "fl_y", "h", "w", "camera_angle_x", "camera_angle_y")}
    (export / "transforms.json").write_text(json.dumps({"frames": frames, **shared, "timestep_indices": list(range(T)),
                                                        "camera_indices": list(range(len(cams_used)))}, indent=4))
    for name, keep in (("train", lambda f: f["timestep_index"] in train_ts and f["camera_index"] != val),
                       ("val", lambda f: f["timestep_index"] in train_ts and f["camera_index"] == val),
                       ("test", lambda f: f["timestep_index"] not in train_ts)):
        (export / f"transforms_{name}.json").write_text(json.dumps({**shared, "frames": [f for f in frames if keep(f)]}))
    np.savez(export / "canonical_flame_param.npz", **{**{k: np.zeros_like(v[:1]) for k, v in gt.to_dict().items()
                                                        if k in ("translation", "rotation", "neck_pose", "eyes_pose", "expr")},
                                                     "jaw_pose": np.array([[0.3, 0, 0]]), "shape": gt.shape})
    np.savez(tracking / f"tracked_flame_params_{epoch}.npz", rotation=gt.rotation, translation=gt.translation,
             neck_pose=gt.neck_pose, jaw_pose=gt.jaw_pose, eyes_pose=gt.eyes_pose, shape=gt.shape, expr=gt.expr,
             timestep_id=np.array([f"{t:05d}" for t in range(T)]), n_processed_frames=np.array(T),
             lights=np.zeros((9, 3), np.float32), static_offset=np.zeros((1, V, 3), np.float32),
             image_size=np.array([cam.height, cam.width]))
    np.savez(tracking / "tracked_flame_params_10.npz", **dict(np.load(tracking / f"tracked_flame_params_{epoch}.npz")))
    return export, tracking


def _records(out, pid):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "work" / f"{pid:03d}").glob("*/record.json")}


def test_vhap_import_then_run_skips_landmarks_and_tracking(tiny_capture, demo_asset, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.runner import run_participant
    from pipelines.stages import PipelineConfig

    root, cfg = tiny_capture
    pid = cfg.participants[0]
    used = [SERIALS[i] for i in (8, 2, 13)]  # frontal and two others
    export, tracking = _write_vhap_folders(tmp_path / "vhap", root, pid, used, demo_asset)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["import", str(export), "--from", "vhap", "--out", str(out), "--participant",
                                 str(pid), "--tracking", str(tracking.parent / tracking.name)])
    assert r.exit_code == 0, r.output
    recs = _records(out, pid)
    assert set(recs) == {"landmarks", "track"}
    for rec in recs.values():
        validate_manifest(rec, "stage_record")
        assert rec["imported"]["from"] == "vhap"
    track = out / "work" / f"{pid:03d}" / "track" / recs["track"]["key"]
    assert [p.name for p in track.glob("tracked_flame_params*.npz")] == ["tracked_flame_params_30.npz"]  # the latest
    m = recs["track"]["metrics"]
    assert m["cameras"] == 3 and m["frames_tracked"] == cfg.timesteps
    assert m["timesteps"] == [f"{t:05d}" for t in range(cfg.timesteps)]  # ids, as the track stage records them
    small_fit = {"iterations": 3, "min_per_face": 1, "max_per_face": 4, "log_every": 1000, "ply_sh_degree": 3}
    pc = PipelineConfig(capture=str(root), out=str(out), participants=[pid], landmarks=GT,
                        tracking=TINY["tracking"], fitting=small_fit)
    s = run_participant(pc.to_dict(), pid)
    assert s["status"] == "complete", s
    assert s["stages"] == {"landmarks": "skipped (imported)", "track": "skipped (imported)", "fit": "complete",
                           "canonicalize": "complete", "tokenize": "complete", "supervise": "complete"}
    fit = _records(out, pid)["fit"]
    assert fit["inputs"]["track"] == str(track)
    ga_read_ply(out / "work" / f"{pid:03d}" / "fit" / fit["input_hash"] / "point_cloud.ply", max_sh_degree=3)
    again = run_participant(pc.to_dict(), pid)
    assert set(again["stages"].values()) == {"skipped (imported)", "skipped (complete)"}


def test_vhap_import_refuses_bad_exports(tiny_capture, demo_asset, tmp_path):
    from pipelines.importers import import_participant

    root, cfg = tiny_capture
    pid = cfg.participants[0]
    export, _ = _write_vhap_folders(tmp_path / "vhap", root, pid, [SERIALS[8]], demo_asset)
    db = json.loads((export / "transforms.json").read_text())
    bad = json.loads(json.dumps(db))
    W, H = cfg.frame_size
    bad["frames"][0]["w"] = 2 * W
    (export / "transforms.json").write_text(json.dumps(bad))
    with pytest.raises(InteropError, match=rf"00000_00\.png: image is {W}x{H}, transforms\.json says {2 * W}x{H}"):
        import_participant("vhap", export, str(tmp_path / "run"), pid, demo_asset)
    (export / "transforms.json").write_text(json.dumps(db))
    step = dict(np.load(export / "flame_param/00001.npz"))
    np.savez(export / "flame_param/00001.npz", **{**step, "translation": step["translation"] * 1000 + [0, 0, 1000]})
    with pytest.raises(InteropError, match=r"00001\.npz: 'translation' reaches .* \(metres expected\)"):
        import_participant("vhap", export, str(tmp_path / "run"), pid, demo_asset)
    assert not (tmp_path / "run" / "work" / f"{pid:03d}" / "track" / "record.json").exists()
    assert not list((tmp_path / "run" / "work" / f"{pid:03d}" / "track").glob("*.tmp-*"))
    from typer.testing import CliRunner

    from pipelines.cli import app

    r = CliRunner().invoke(app, ["import", str(export), "--from", "vhap", "--out", str(tmp_path / "run"),
                                 "--participant", str(pid)])
    assert r.exit_code == 2 and "error: " in r.output and "metres expected" in r.output and "Traceback" not in r.output


def _write_ga_folder(folder, g, params_path, iteration, V):
    """GaussianAvatars' save_ply (SH degree 3, quaternions as optimised) and flame_param.npz."""
    d = folder / "point_cloud" / f"iteration_{iteration}"
    d.mkdir(parents=True)
    n = len(g)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)] + \
        ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "binding_0"]
    rest = np.random.default_rng(iteration).normal(scale=0.01, size=(n, 3, 15))  # channel-major
    attrs = np.concatenate([g.xyz, np.zeros((n, 3)), g.sh[:, 0], rest.reshape(n, 45), g.opacity_logit[:, None],
                            g.log_scale, g.rotation * 1.7, g.binding[:, None]], 1)
    el = np.empty(n, dtype=[(k, "f4") for k in names])
    el[:] = list(map(tuple, attrs))
    PlyData([PlyElement.describe(el, "vertex")]).write(str(d / "point_cloud.ply"))
    p = FlameParams.load(params_path)
    T = p.num_frames
    np.savez(d / "flame_param.npz", shape=p.shape, expr=p.expr, rotation=p.rotation, neck_pose=p.neck_pose,
             jaw_pose=p.jaw_pose, eyes_pose=p.eyes_pose, translation=p.translation,
             static_offset=np.zeros((V, 3), np.float32), dynamic_offset=np.zeros((T, V, 3), np.float32))
    return d


def test_gaussian_avatars_import_flows_to_tokens(tiny_capture, demo_asset, tmp_path):
    from pipelines.importers import import_participant
    from pipelines.runner import run_participant
    from pipelines.stages import PipelineConfig
    from pointillist_data.canonical import CanonicalCloud, canonicalize

    root, cfg = tiny_capture
    pid = cfg.participants[1]
    gt = root / f"{pid:03d}" / "ground_truth"
    g = read_ply(gt / "point_cloud.ply", demo_asset.num_faces)
    ga = tmp_path / "ga"
    _write_ga_folder(ga, g, gt / "flame_param.npz", 30000, demo_asset.num_vertices)
    old = _write_ga_folder(ga, g, gt / "flame_param.npz", 7000, demo_asset.num_vertices)
    (old / "flame_param.npz").unlink()  # an older iteration is never read
    out = tmp_path / "run"
    recs = import_participant("ga", ga, str(out), pid, demo_asset)
    assert set(recs) == {"landmarks", "track", "fit"}
    assert recs["fit"]["metrics"]["sh_degree"] == 3 and recs["fit"]["metrics"]["gaussians"] == len(g)
    pc = PipelineConfig(capture=str(root), out=str(out), participants=[pid], landmarks=GT, **TINY)
    s = run_participant(pc.to_dict(), pid, until="canonicalize")  # tokenize: see the VHAP import test
    assert s["status"] == "complete", s
    assert s["stages"] == {"landmarks": "skipped (imported)", "track": "skipped (imported)",
                           "fit": "skipped (imported)", "canonicalize": "complete"}
    rec = _records(out, pid)["canonicalize"]
    got = CanonicalCloud.load(out / "work" / f"{pid:03d}" / "canonicalize" / rec["input_hash"] / "canonical.npz")
    want = canonicalize(g, FlameParams.load(gt / "flame_param.npz"), demo_asset)
    np.testing.assert_array_equal(got.points, want.points)
    np.testing.assert_array_equal(got.binding, g.binding)
    # a binding outside the head model is refused, naming the file; nothing is recorded
    bad = tmp_path / "bad"
    g.binding[3] = demo_asset.num_faces + 5
    _write_ga_folder(bad, g, gt / "flame_param.npz", 100, demo_asset.num_vertices)
    with pytest.raises(InteropError, match=r"iteration_100/point_cloud\.ply: binding of Gaussian 3"):
        import_participant("ga", bad, str(tmp_path / "run2"), pid, demo_asset)
    assert not (tmp_path / "run2" / "work" / f"{pid:03d}" / "fit" / "record.json").exists()
    with pytest.raises(InteropError, match="no point cloud of iteration 5"):
        import_participant("ga", ga, str(tmp_path / "run2"), pid, demo_asset, iteration=5)


def test_import_then_run_validate_and_a_sample_in_the_store(tiny_capture, demo_asset, tmp_path):
    """The documented workflow end to end (docs/INTEROP.md, "Importing"): `import --from vhap`
    and `import --from ga`, then `pointillist run` (dask, shard, validate), then `validate`."""
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pointillist_data.store.token_store import TokenStore

    root, cfg = tiny_capture
    a, b = cfg.participants[0], cfg.participants[1]
    export, tracking = _write_vhap_folders(tmp_path / "vhap", root, a, [SERIALS[8], SERIALS[2]], demo_asset)
    gt = root / f"{b:03d}" / "ground_truth"
    _write_ga_folder(tmp_path / "ga", read_ply(gt / "point_cloud.ply", demo_asset.num_faces), gt / "flame_param.npz",
                     30000, demo_asset.num_vertices)
    out = tmp_path / "run"
    cli = CliRunner()
    for src, kind, pid, extra in ((export, "vhap", a, ["--tracking", str(tracking)]), (tmp_path / "ga", "ga", b, [])):
        r = cli.invoke(app, ["import", str(src), "--from", kind, "--out", str(out), "--participant", str(pid), *extra])
        assert r.exit_code == 0, r.output
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"tracking": TINY["tracking"], "fitting": {"iterations": 3, "min_per_face": 1,
                                                                          "max_per_face": 4, "log_every": 1000}}))
    r = cli.invoke(app, ["run", "--capture", str(root), "--out", str(out), "--participants", f"{a},{b}", "--landmarks",
                         GT, "--config", str(conf), "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["validate", str(out / "store.zarr")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    st = TokenStore.open(out / "store.zarr")
    assert st.subject_ids() == [f"{a:03d}", f"{b:03d}"]
    prov = {e["subject_id"]: e["provenance"] for e in st.entries()}
    # VHAP: the frames of its tracked file, by the export's timestep ids; GaussianAvatars: its frame count
    assert prov[f"{a:03d}"]["timesteps"] == [f"{t:05d}" for t in range(cfg.timesteps)]
    assert prov[f"{a:03d}"]["tracking"]["frames_tracked"] == cfg.timesteps
    T_ga = FlameParams.load(gt / "flame_param.npz").num_frames
    assert prov[f"{b:03d}"]["tracking"]["frames_tracked"] == T_ga
    assert prov[f"{b:03d}"]["fitting"]["gaussians"] == len(read_ply(gt / "point_cloud.ply", demo_asset.num_faces))
    assert prov[f"{a:03d}"]["stages"]["track"]["imported"]["from"] == "vhap"
    assert prov[f"{b:03d}"]["stages"]["fit"]["imported"]["from"] == "ga"
    assert "imported" not in prov[f"{a:03d}"]["stages"]["fit"]  # fitted by the run


def test_provenance_reads_records_of_older_imports():
    """Imports before issue 26 recorded the track metric ``timesteps`` as a count; the store's
    provenance reads such records (a re-run must not crash on them) and keeps the count."""
    from pointillist_data.provenance import sample_provenance

    old = {"status": "complete", "imported": {"from": "vhap"}, "metrics": {"timesteps": 7, "cameras": 3}}
    fit = {"status": "complete", "metrics": {"gaussians": 40, "timesteps": 7, "per_face_histogram": 5}}
    p = sample_provenance("017", 40, 200, {"track": old, "fit": fit}, flame={"kind": "bundled"})
    assert p["timesteps"] == [] and p["tracking"]["frames_tracked"] == 7 and p["quality"]["frames"] == 7
    assert p["fitting"]["per_face_histogram"] == [] and p["stages"]["track"]["imported"] == {"from": "vhap"}
    new = {**old, "metrics": {"timesteps": ["00000", "00010"], "frames_tracked": 2}}
    assert sample_provenance("017", 40, 200, {"track": new}, flame={})["timesteps"] == ["00000", "00010"]


def test_import_fidelity_every_image_vhap_arrays_paths_and_sh_degree(tiny_capture, demo_asset, tmp_path,
                                                                       monkeypatch):
    from pipelines.importers import import_participant

    root, cfg = tiny_capture
    pid = cfg.participants[0]
    export, tracking = _write_vhap_folders(tmp_path / "vhap", root, pid, [SERIALS[8], SERIALS[2]], demo_asset)
    tracked = tracking / "tracked_flame_params_30.npz"
    z = dict(np.load(tracked))
    rng = np.random.default_rng(5)
    # VHAP's tracker writes its SH lighting and texture offsets; its loader reads them to resume
    arrays = {"lights": rng.normal(size=(9, 3)).astype(np.float32),
              "tex_extra": rng.normal(size=(3, 16, 16)).astype(np.float32)}
    np.savez(tracked, **{**z, **arrays})
    # the same files by a relative and by an absolute --tracking: recorded absolute, the same key
    monkeypatch.chdir(tracking.parent)
    rel = import_participant("vhap", export, str(tmp_path / "rel"), pid, demo_asset, tracking=tracking.name)
    ab = import_participant("vhap", export, str(tmp_path / "abs"), pid, demo_asset, tracking=str(tracking))
    assert rel["track"]["imported"]["tracking"] == str(tracking) and rel["track"]["key"] == ab["track"]["key"]
    got = np.load(tmp_path / "abs" / "work" / f"{pid:03d}" / "track" / ab["track"]["key"] / tracked.name)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
    # every listed image is checked, not one per camera
    late = export / "images" / f"{cfg.timesteps - 1:05d}_01.png"
    iio.imwrite(late, np.zeros((150, 100, 3), np.uint8))
    W, H = cfg.frame_size
    with pytest.raises(InteropError, match=rf"{late.name}: image is 100x150, transforms\.json says {W}x{H}"):
        import_participant("vhap", export, str(tmp_path / "run3"), pid, demo_asset)
    # a --ply-sh-degree below the file's is refused naming the user's file, not a temporary one
    gt = root / f"{pid:03d}" / "ground_truth"
    ga = tmp_path / "ga"
    d = _write_ga_folder(ga, read_ply(gt / "point_cloud.ply", demo_asset.num_faces), gt / "flame_param.npz", 9,
                         demo_asset.num_vertices)
    with pytest.raises(InteropError) as e:
        import_participant("ga", ga, str(tmp_path / "run4"), pid, demo_asset, ply_sh_degree=1)
    assert str(e.value).startswith(f"{d / 'point_cloud.ply'}: has SH degree 3") and str(tmp_path / "run4") not in str(e.value)
    assert not (tmp_path / "run4" / "work" / f"{pid:03d}" / "fit" / "record.json").exists()


def test_vhap_import_refuses_small_motion_in_millimetres_or_degrees(tiny_capture, demo_asset, tmp_path):
    """Millimetres with a few mm of motion and degrees of a few degrees pass every range check;
    where the projected head lands in the masks tells them apart (the unit is named)."""
    from pipelines.importers import import_participant

    root, cfg = tiny_capture
    pid = cfg.participants[0]
    export, tracking = _write_vhap_folders(tmp_path / "vhap", root, pid, [SERIALS[8], SERIALS[2]], demo_asset)
    rec = import_participant("vhap", export, str(tmp_path / "ok"), pid, demo_asset, tracking=str(tracking))
    fit = rec["track"]["metrics"]["head_in_masks"]
    assert fit["export"] > 0.9 and fit["tracked"] > 0.9, fit  # the ground truth lies in its own masks
    steps = sorted((export / "flame_param").glob("*.npz"))
    good = {p: dict(np.load(p)) for p in steps}
    angles = ("rotation", "neck_pose", "jaw_pose", "eyes_pose")
    for unit, change in (("'translation' in millimetres", lambda z: {"translation": np.clip(z["translation"] * 1000,
                                                                                            -7, 7)}),
                         ("axis-angles in degrees", lambda z: {k: np.clip(np.degrees(z[k]), -6, 6) for k in angles})):
        for p, z in good.items():
            np.savez(p, **{**z, **change(z)})
            assert np.abs(np.load(p)["translation"]).max() <= 10  # inside check_ranges' bounds
        with pytest.raises(InteropError, match=rf"flame_param: .* read with {unit}: convert to metres and radians"):
            import_participant("vhap", export, str(tmp_path / "run"), pid, demo_asset)
    for p, z in good.items():
        np.savez(p, **z)
    tracked = tracking / "tracked_flame_params_30.npz"
    z = dict(np.load(tracked))
    np.savez(tracked, **{**z, **{k: np.clip(np.degrees(z[k]), -6, 6) for k in angles}})
    with pytest.raises(InteropError, match=rf"{tracked.name}: .* read with axis-angles in degrees"):
        import_participant("vhap", export, str(tmp_path / "run"), pid, demo_asset, tracking=str(tracking))
    assert not (tmp_path / "run" / "work" / f"{pid:03d}" / "track" / "record.json").exists()
