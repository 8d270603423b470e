"""``pointillist render`` (GaussianAvatars' render.py): a fitted avatar rendered into an export's
cameras or virtual ones, for its timesteps or a motion. The reference is the synthetic
capture's ground truth: its Gaussians and FLAME parameters (``ground_truth/``) and the alpha
maps it rendered into its 16 cameras (``alpha.npy``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pictures import open_picture
from PIL import Image
from typer.testing import CliRunner

GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # NeRF / OpenGL camera axes from OpenCV's


@pytest.fixture(scope="module")
def capture(synthetic_capture, tmp_path_factory):
    """The ground-truth avatar folder, an export of the capture's cameras written from the NeRF
    convention (``transform_matrix`` = camera-to-world with y and z flipped, ``cy`` from the
    bottom), and the capture's alpha maps ``(T, C, H, W)``."""
    from pointillist_data.capture.synthetic import make_rig

    root, cfg, _ = synthetic_capture
    gt = root / f"{cfg.participants[0]:03d}" / "ground_truth"
    cams = make_rig(cfg.scale, cfg.seed)
    frames = [{"timestep_index": 0, "camera_index": i, "camera_id": c.serial, "w": c.width, "h": c.height,
               "fl_x": c.K[0, 0], "fl_y": c.K[1, 1], "cx": c.K[0, 2], "cy": c.height - c.K[1, 2],
               "transform_matrix": (np.linalg.inv(c.world_to_cam) @ GL_FLIP).tolist(),
               "file_path": f"images/{i:02d}.png"} for i, c in enumerate(cams)]
    export = tmp_path_factory.mktemp("export")
    (export / "transforms.json").write_text(json.dumps({"frames": frames}))
    alpha = np.load(gt / cfg.sequence / "alpha.npy").astype(np.float64)
    return gt, export, cams, alpha


def _render(args):
    from pipelines.cli import app

    return CliRunner().invoke(app, ["render", *map(str, args)])


def _png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255


def test_render_into_export_cameras_reproduces_the_captures_alpha(capture, tmp_path):
    """Rendered over black and over white, the difference is 1 - alpha: it matches the alpha the
    capture rendered, camera by camera (chosen by serial and by index) and timestep by timestep."""
    gt, export, cams, alpha = capture
    sel = [cams[0].serial, "5"]
    for bg in (0, 1):
        r = _render(["--fit", gt, "--out", tmp_path / f"bg{bg}", "--export", export, "--cameras", ",".join(sel),
                     "--timesteps", "0,2", "--background", bg])
        assert r.exit_code == 0, r.output
    for c, name in ((0, cams[0].serial), (5, cams[5].serial)):
        for t in (0, 2):
            black, white = (_png(tmp_path / f"bg{bg}" / "frames" / name / f"{t:05d}.png") for bg in (0, 1))
            ours = 1 - (white - black).mean(-1)
            assert ours.shape == alpha[t, c].shape
            assert np.abs(ours - alpha[t, c]).max() < 0.02 and alpha[t, c].max() > 0.5, (c, t)
    rec = json.loads((tmp_path / "bg1" / "render.json").read_text())
    assert rec["cameras"] == [cams[0].serial, cams[5].serial] and rec["timesteps"] == [0, 2]
    import imageio.v3 as iio

    for name in rec["cameras"]:  # one video per camera over the timesteps
        assert iio.improps(tmp_path / "bg1" / f"{name}.mp4", plugin="pyav").shape[:3] == (2, 160, 110)
    sheet = open_picture(tmp_path / "bg1" / "render.png", (2 * 110, 2 * 160))
    assert sheet.shape[:2] == (2 * 162 + 2, 2 * 112 + 2)  # cameras in rows, timesteps in columns


def test_render_virtual_views_of_a_gaussian_avatars_folder_and_a_motion(capture, tmp_path):
    """GaussianAvatars' layout (the largest iteration is read); virtual views follow the head;
    a motion drives the avatar with its own identity kept (the motion's shape is ignored)."""
    from pointillist_data.flame import FlameParams

    gt, *_ = capture
    ga = tmp_path / "ga"
    for it in (100, 3000):
        d = ga / "point_cloud" / f"iteration_{it}"
        d.mkdir(parents=True)
        shutil.copy(gt / "flame_param.npz", d / "flame_param.npz")
    shutil.copy(gt / "point_cloud.ply", ga / "point_cloud" / "iteration_3000" / "point_cloud.ply")
    (ga / "point_cloud" / "iteration_100" / "point_cloud.ply").write_text("not a ply")  # never read
    r = _render(["--fit", ga, "--out", tmp_path / "own", "--views", "2", "--size", "64"])
    assert r.exit_code == 0, r.output
    own = json.loads((tmp_path / "own" / "render.json").read_text())
    assert own["fit"].endswith("iteration_3000/point_cloud.ply") and own["cameras"] == ["view0", "view1"]
    front = open_picture(tmp_path / "own" / "frames" / "view0" / "00001.png", (64, 64))
    assert (front.min(-1) < 200).mean() > 0.1  # the head fills part of the frame
    open_picture(tmp_path / "own" / "render.png", (3 * 64, 2 * 64))
    p = FlameParams.load(gt / "flame_param.npz")
    p.shape = p.shape + 1.0  # another identity: render keeps the avatar's
    p.save(tmp_path / "motion.npz")
    for name, extra in (("driven", ["--motion", tmp_path / "motion.npz"]), ("own1", [])):
        # the virtual cameras follow the first rendered timestep's pose: both start at timestep 1
        r = _render(["--fit", ga, "--out", tmp_path / name, "--views", "2", "--size", "64", "--timesteps", "1", *extra])
        assert r.exit_code == 0, r.output
    for v in ("view0", "view1"):
        assert np.abs(_png(tmp_path / "driven" / "frames" / v / "00001.png")
                      - _png(tmp_path / "own1" / "frames" / v / "00001.png")).max() <= 1 / 255
    assert not (tmp_path / "driven" / "view0.mp4").exists()  # one timestep: no video


@pytest.mark.parametrize("args,named", [
    (["--timesteps", "7"], "--timesteps"),
    (["--cameras", "0"], "--cameras"),
    (["--size", "63"], "--size"),
])
def test_render_bad_input_is_one_line(capture, tmp_path, args, named):
    gt, *_ = capture
    r = _render(["--fit", gt, "--out", tmp_path / "o", *args])
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and lines[0].startswith("error: ") and named in lines[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "o" / "render.json").exists()


def test_render_missing_folder_is_one_line(tmp_path):
    r = _render(["--fit", tmp_path / "nothing", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "nothing" in r.output and "Traceback" not in r.output, r.output
