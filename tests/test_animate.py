"""``pointillist animate``: an existing avatar driven by a FLAME motion, driver | avatar.

The avatar is a small "fitted" one written as the ``fit`` stage writes it (GaussianAvatars'
PLY with ``flame_param.npz`` beside it): the synthetic capture's appearance model
subsampled (as ``tests/decoder_world.py`` makes its identity). The reference for the
animated Gaussians is GaussianAvatars' own rule, written here: every Gaussian's local
position, scale and rotation are carried by the frame of its face on the *posed* mesh.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pointillist_data.capture.appearance import make_identity_gaussians
from pointillist_data.capture.synthetic import synthetic_motion
from pointillist_data.flame import FlameModel, FlameParams
from pointillist_data.flame.frames import face_frames
from pointillist_data.gaussians import BoundGaussians, write_ply
from pointillist_data.render import render_gaussians

T = 4


@pytest.fixture(scope="module")
def fitted(demo_asset, tmp_path_factory):
    """``(folder, identity, motion_path)``: a 400-Gaussian avatar and a VHAP motion of T frames
    with 100 expression coefficients (the demo head has fewer)."""
    rng = np.random.default_rng(5)
    shape = np.zeros(300, np.float32)
    shape[: demo_asset.n_shape] = rng.normal(scale=0.8, size=demo_asset.n_shape)
    full = make_identity_gaussians(demo_asset, 5, shape[: demo_asset.n_shape])
    keep = np.sort(rng.choice(len(full), 400, replace=False))
    g = BoundGaussians(full.xyz[keep], full.log_scale[keep] + np.log(2.0), full.rotation[keep],
                       full.opacity_logit[keep], full.sh[keep], full.binding[keep])
    root = tmp_path_factory.mktemp("animate")
    folder = root / "fit"
    folder.mkdir()
    write_ply(g, folder / "point_cloud.ply", demo_asset.num_faces)
    identity = FlameParams.zeros(1, num_vertices=demo_asset.num_vertices)
    identity.shape = shape
    identity.save_gaussian_avatars(folder / "flame_param.npz", demo_asset.num_vertices)
    m = synthetic_motion(T, 100, rng)
    m["jaw_pose"][-1, 0] = 0.35  # an open mouth at the last frame
    m["expr"][:, 50] = 0.5  # a coefficient the demo head cannot show (the warning says so)
    motion = FlameParams(**m, eyes_pose=np.zeros((T, 6)), shape=rng.normal(size=300) * 0.5,
                         timestep_id=np.array([f"{t:05d}" for t in range(T)]))
    motion.save(root / "tracked_flame_params_6.npz")
    return folder, identity, root / "tracked_flame_params_6.npz", g


def test_animation_choices_match_the_animator():
    from pointillist_data.animation import MODES
    from pointillist_data.reenactment.config import ANIMATION_CHOICES

    assert ANIMATION_CHOICES == MODES


def test_avatar_panel_is_gaussian_avatars_rule(fitted, demo_asset):
    """The avatar panel equals the PLY's Gaussians placed by the posed mesh's face frames
    (GaussianAvatars), rendered by the same camera: the animation is the binding's."""
    from pointillist_data.interop.motion import read_motion
    from pointillist_data.reenactment.render import _animator, load_avatar_folder, render_bound_avatar
    from pointillist_data.viz import default_K, look_at_viewmat

    folder, identity, mpath, g = fitted
    av = load_avatar_folder(folder, demo_asset)
    assert av.animation == "face_frame" and len(av.gaussians) == len(g)
    motion = read_motion(mpath, demo_asset.n_expr, demo_asset.num_vertices).params
    K = torch.as_tensor(default_K(40, 40, 20.0), dtype=torch.float32)
    view = torch.as_tensor(look_at_viewmat(np.array([0.05, 0.0, 0.9]), np.zeros(3)), dtype=torch.float32)
    got = render_bound_avatar(_animator(demo_asset, av.identity, torch.device("cpu")), av.gaussians, motion, view, K,
                              40, "face_frame")
    model = FlameModel(demo_asset)
    p = motion.to_torch()
    p["shape"] = torch.as_tensor(identity.shape)[None].expand(T, -1)  # the avatar keeps its identity
    p.pop("static_offset", None)
    with torch.no_grad():
        verts = model.forward_params(p)["vertices"]
        for t in range(T):
            gg = g.to_global(face_frames(verts[t], model.faces))
            r = render_gaussians(gg["means"], gg["quats"], gg["scales"], gg["opacities"], gg["sh"], view[None], K[None],
                                 40, 40, torch.ones(1, 3), sh_degree=g.sh_degree)
            want = (r.rgb[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            diff = np.abs(got[t].astype(int) - want.astype(int))
            assert diff.max() <= 2, (t, diff.max())
    assert np.abs(got[-1].astype(int) - got[0].astype(int)).max() > 30  # it moved (jaw, head)


def test_animate_command_end_to_end(fitted, tmp_path):
    import imageio.v3 as iio

    from pipelines.cli import app

    folder, _, mpath, _ = fitted
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["animate", "--avatar", str(folder), "--motion", str(mpath), "--out", str(out),
                                 "--size", "48", "--device", "cpu"])
    assert r.exit_code == 0, (r.output, r.exception)
    # 100 coefficients onto the demo head's: one warning line naming the file and both counts
    warn = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "tracked_flame_params_6.npz" in warn[0] and "100 expression" in warn[0], r.output
    info = json.loads((out / "animate.json").read_text())
    assert info["motion_format"] == "vhap" and info["frames"] == T and info["gaussians"] == 400
    video = iio.imread(out / info["files"]["reenactment_mp4"], plugin="pyav")
    assert video.shape == (T, 48, 96, 3)
    png = iio.imread(out / info["files"]["reenactment_png"])
    assert png.ndim == 3 and png.shape[1] > 2 * 96
    for t in (0, T - 1):
        driver, avatar = video[t, :, :48].astype(int), video[t, :, 48:].astype(int)
        # non-blank: both panels hold a head over the white background, around the middle
        for panel in (driver, avatar):
            fg = (255 - panel).sum(-1) > 60
            assert 0.05 < fg.mean() < 0.9, fg.mean()
            assert fg[20:28, 20:28].any()
    # the driver's mesh moves (open jaw at the last frame)
    assert np.abs(video[-1, :, :48].astype(int) - video[0, :, :48].astype(int)).max() > 40
    cfg = json.loads((out / "animate_config.json").read_text())
    assert cfg["size"] == 48


def test_gaussian_avatars_output_folder_and_lam_motion(fitted, demo_asset, tmp_path):
    """A GaussianAvatars model folder (largest iteration read) driven by a LAM JSON motion."""
    import shutil

    from pipelines.cli import app

    folder, _, mpath, _ = fitted
    for it in (7000, 30000):
        d = tmp_path / "ga" / "point_cloud" / f"iteration_{it}"
        d.mkdir(parents=True)
        shutil.copy(folder / "point_cloud.ply", d / "point_cloud.ply")
        shutil.copy(folder / "flame_param.npz", d / "flame_param.npz")
    (tmp_path / "ga" / "point_cloud" / "iteration_7000" / "point_cloud.ply").write_text("damaged: never read")
    m = FlameParams.load(mpath)
    lam = tmp_path / "flame_params.json"
    lam.write_text(json.dumps({k: getattr(m, k)[:2, :demo_asset.n_expr].tolist() if k == "expr" else
                               getattr(m, k)[:2].tolist()
                               for k in ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "expr")}))
    r = CliRunner().invoke(app, ["animate", "--avatar", str(tmp_path / "ga"), "--motion", str(lam), "--size", "32",
                                 "--device", "cpu", "--animation", "barycentric"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "warning" not in r.output  # the head model's own expression count: nothing to map
    info = json.loads((tmp_path / "ga" / "animate-flame_params" / "animate.json").read_text())
    assert info["motion_format"] == "lam_json" and info["frames"] == 2 and info["animation"] == "barycentric"
    assert info["ply"].endswith("iteration_30000/point_cloud.ply")


def test_animate_bad_inputs_are_one_line(fitted, tmp_path):
    from test_cli import one_line_error

    from pipelines.cli import app

    folder, _, mpath, _ = fitted
    bad = tmp_path / "motion.npz"
    bad.write_text("not an archive")
    run = lambda *a: CliRunner().invoke(app, ["animate", "--out", str(tmp_path / "o"), *a])  # noqa: E731
    one_line_error(run("--avatar", str(folder), "--motion", str(bad)), "motion.npz", "not a readable")
    one_line_error(run("--avatar", str(folder), "--motion", str(tmp_path / "none.npz")), "none.npz")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run("--avatar", str(empty), "--motion", str(mpath)), "empty", "point_cloud.ply")
    one_line_error(run("--avatar", str(folder), "--motion", str(mpath), "--size", "7"), "--size")
    assert not (tmp_path / "o").exists()  # nothing written for refused input
