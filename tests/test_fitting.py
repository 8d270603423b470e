"""Fitting: held-out PSNR, the PLY layout and placement, density bounds, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData

from pointillist_data.capture import stack_cameras
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.fitting.data import FittingInputError, load_export
from pointillist_data.fitting.density import check_bounds, select_densify, select_prune
from pointillist_data.fitting.stage import run_fitting
from pointillist_data.fitting.trainer import GaussianFitter
from pointillist_data.flame import FlameParams, face_frames
from pointillist_data.flame.model import FlameModel
from pointillist_data.gaussians import GaussianPlyError, ply_field_names, read_ply
from pointillist_data.render import render_gaussians


@pytest.fixture(scope="module")
def fitted(tracked, demo_asset, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    rec = run_fitting(tracked[0] / "export", demo_asset, out, FittingConfig(iterations=300))
    return out, rec


def test_heldout_psnr_and_bounds(fitted):
    out, rec = fitted
    m = rec["metrics"]
    print(f"fitting: held-out PSNR {m['heldout']['psnr']:.2f} dB over {m['heldout']['images']} images, "
          f"{m['gaussians']} Gaussians, {m['per_face']['empty_faces']} empty faces")
    assert m["heldout"]["images"] > 0 and m["heldout"]["psnr"] >= 25.0
    h = m["per_face"]["histogram"]
    assert sum(h[1:4]) == 0 and len(h) <= 16  # every face holds 0 or 4..15
    assert m["gaussians"] == sum(i * n for i, n in enumerate(h))
    assert json.loads((out / "fitting_record.json").read_text())["metrics"]["gaussians"] == m["gaussians"]
    assert (out / "heldout.png").exists() and (out / "config.json").exists()


def test_ply_layout_and_placement(fitted, tracked, demo_asset):
    out, _ = fitted
    ply = PlyData.read(str(out / "point_cloud.ply"))
    assert list(ply["vertex"].data.dtype.names) == ply_field_names(0)
    assert all(ply["vertex"].data.dtype[n] == np.float32 for n in ply["vertex"].data.dtype.names)
    assert len(trimesh.load(out / "point_cloud.ply").vertices) == len(ply["vertex"].data)
    g = read_ply(out / "point_cloud.ply", demo_asset.num_faces)
    np.testing.assert_allclose(np.linalg.norm(g.rotation, axis=1), 1.0, atol=1e-6)  # written normalised
    # GaussianAvatars' load_ply: torch.from_numpy on every entry of flame_param.npz, then its
    # select_mesh_by_timestep indexes dynamic_offset[[t]] and adds static_offset
    ga = {k: torch.from_numpy(v) for k, v in np.load(out / "flame_param.npz").items()}
    T, V = len(tracked[2].images), demo_asset.num_vertices
    assert set(ga) == {"shape", "expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation",
                       "static_offset", "dynamic_offset"}
    assert all(v.dtype == torch.float32 for v in ga.values()) and ga["expr"].shape[0] == T
    assert ga["dynamic_offset"].shape == (T, V, 3) and ga["dynamic_offset"][[T - 1]].shape == (1, V, 3)
    assert ga["static_offset"].shape == (1, V, 3) and ga["shape"].shape == (300,)
    # local -> global with the saved FLAME parameters reproduces the fitted avatar's render
    params = FlameParams.load(out / "flame_param.npz")
    verts = FlameModel(demo_asset).forward_params(params.to_torch())["vertices"][0].detach()
    gl = g.to_global(face_frames(verts, torch.as_tensor(demo_asset.faces)))
    data = load_export(tracked[0] / "export")
    i = int(data.indices("val")[0])
    assert int(data.timestep[i]) == 0
    vm, K = stack_cameras([data.cameras[i]])
    img = render_gaussians(gl["means"], gl["quats"], gl["scales"], gl["opacities"], gl["rgb"], vm, K,
                           data.cameras[i].width, data.cameras[i].height, backgrounds=torch.ones(1, 3)).rgb[0]
    psnr = -10 * torch.log10(((img - data.images[i]) ** 2).mean())
    assert psnr > 25


def test_forced_densification_and_pruning_respect_bounds(tracked, demo_asset):
    data = load_export(tracked[0] / "export")
    cfg = FittingConfig(iterations=40, min_per_face=2, max_per_face=5, grad_threshold=1e-9, densify_from=0.1,
                        densify_until=0.95, densify_every=0.1, prune_opacity=0.69, opacity_reset_every=0.0, log_every=1000)
    fitter = GaussianFitter(demo_asset, data, cfg)
    counts = []
    original = fitter._densify

    def checked(scales, **kw):
        ev = original(scales, **kw)
        ok, hist = fitter.bounds()
        assert ok, hist
        counts.append(ev)
        return ev

    fitter._densify = checked
    fitter.fit()
    assert sum(e["clone"] + e["split"] for e in counts) > 0 and sum(e["prune"] for e in counts) > 0
    ok, hist = fitter.bounds()
    assert ok and hist["max"] == 5 and hist["empty_faces"] > 0


def test_density_selection_rules():
    g = torch.Generator().manual_seed(0)
    F_ = 50
    binding = torch.randint(0, F_, (300,), generator=g)
    binding = torch.cat([binding, torch.arange(F_).repeat_interleave(4)])  # every face >= 4
    cand = torch.rand(len(binding), generator=g) > 0.3
    allow = select_densify(binding, cand, torch.rand(len(binding), generator=g), F_, 15)
    before = torch.bincount(binding, minlength=F_)
    after = before + torch.bincount(binding[allow], minlength=F_)
    assert (after <= torch.clamp(before, min=15)).all() and (allow <= cand).all()
    assert (after[before < 15] == 15).any()  # the cap is reached, not just respected
    opac = torch.rand(len(binding), generator=g)
    opac[binding == 7] = 0.001  # face 7 entirely transparent
    prune = select_prune(binding, opac, 0.3, F_, 4, allow_empty=True)
    left = torch.bincount(binding[~prune], minlength=F_)
    assert left[7] == 0 and ((left == 0) | (left >= 4)).all()
    keep_all = select_prune(binding, opac, 0.3, F_, 4, allow_empty=False)
    assert torch.bincount(binding[~keep_all], minlength=F_).min() >= 4
    assert check_bounds(binding[~prune], F_, 4, 1000)[0]


def test_bad_tracking_outputs(tracked, tmp_path, demo_asset):
    with pytest.raises(FittingInputError, match="cannot read the tracking export"):
        load_export(tmp_path / "nothing")
    bad = tmp_path / "export"
    shutil.copytree(tracked[0] / "export", bad)
    p = FlameParams.load(bad / "flame_param/00001.npz").to_dict()
    p["jaw_pose"][0, 0] = np.nan
    np.savez(bad / "flame_param/00001.npz", **p)
    with pytest.raises(FittingInputError, match=r"00001\.npz: 'jaw_pose' contains NaN"):
        load_export(bad)
    (bad / "flame_param/00001.npz").unlink()
    with pytest.raises(FittingInputError, match="timestep 1 missing"):
        load_export(bad)
    from pointillist_data.gaussians import BoundGaussians, write_ply

    bg = BoundGaussians(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.tile([1, 0, 0, 0], (2, 1)).astype(np.float32),
                        np.zeros(2, np.float32), np.zeros((2, 1, 3), np.float32), np.array([3, 99999]))
    with pytest.raises(GaussianPlyError, match="binding of Gaussian 1 is 99999"):
        write_ply(bg, tmp_path / "bad.ply", demo_asset.num_faces)
    assert not (tmp_path / "bad.ply").exists()
    write_ply(bg, tmp_path / "bad.ply")
    with pytest.raises(GaussianPlyError, match="outside"):
        read_ply(tmp_path / "bad.ply", demo_asset.num_faces)


def test_flame_finetuning_moves_expressions(tracked, demo_asset):
    data = load_export(tracked[0] / "export")
    fitter = GaussianFitter(demo_asset, data, FittingConfig(iterations=8, finetune_flame=True, lr_flame=1e-2,
                                                            densify_from=1.0, densify_until=1.0, log_every=1000))
    fitter.fit()
    tuned = fitter.flame_result()
    assert tuned.num_frames == data.params.num_frames
    assert not np.allclose(tuned.expr, data.params.expr) and np.allclose(tuned.shape, data.params.shape)
