"""FLAME forward pass: skinning against a NumPy LBS reference, landmarks, teeth, demo head."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from pointillist_data.flame import (
    FlameModel,
    build_demo_asset,
    bundled_flame_basis,
    load_flame_asset,
    save_flame_asset,
)
from pointillist_data.flame.teeth import NUM_TEETH_FACES, NUM_TEETH_VERTICES


def _rodrigues(r):
    th = np.linalg.norm(r)
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * Kx @ Kx


def _numpy_lbs(asset, pose):
    """Reference LBS written here: pose (5, 3) axis-angle per joint, zero shape/expr."""
    v = asset.v_template
    J = asset.J_regressor @ v
    G = []
    for j in range(5):
        T = np.eye(4)
        T[:3, :3] = _rodrigues(pose[j])
        T[:3, 3] = J[j] - (J[asset.parents[j]] if j else 0)
        G.append(T if j == 0 else G[asset.parents[j]] @ T)
    A = np.stack([g @ np.block([[np.eye(3), -J[j][:, None]], [np.zeros((1, 3)), np.ones((1, 1))]]) for j, g in enumerate(G)])
    Tv = np.einsum("vj,jab->vab", asset.lbs_weights, A)
    return np.einsum("vab,vb->va", Tv, np.concatenate([v, np.ones((len(v), 1))], 1))[:, :3]


def test_jaw_rotation_moves_only_jaw_vertices(demo_asset):
    asset = demo_asset
    model = FlameModel(asset, dtype=torch.float64)
    jaw = np.array([0.25, 0.05, -0.02])
    out = model(jaw_pose=torch.tensor(jaw)[None])["vertices"][0].numpy()
    pose = np.zeros((5, 3))
    pose[2] = jaw
    ref = _numpy_lbs(asset, pose)
    np.testing.assert_allclose(out, ref, atol=1e-10)
    moved = np.linalg.norm(out - asset.v_template, axis=1) > 1e-9
    w_jaw = asset.lbs_weights[:, 2]
    assert np.all(w_jaw[moved] > 0), "a vertex without jaw weight moved"
    # a vertex fully on the jaw turns rigidly about the jaw joint by exactly the jaw rotation
    full = np.flatnonzero(w_jaw > 1 - 1e-9)
    assert len(full) > 0
    J = asset.J_regressor @ asset.v_template
    expected = (asset.v_template[full] - J[2]) @ _rodrigues(jaw).T + J[2]
    np.testing.assert_allclose(out[full], expected, atol=1e-10)
    # lower teeth follow the jaw, upper teeth the neck (do not move)
    lower = np.arange(asset.num_vertices - NUM_TEETH_VERTICES // 2, asset.num_vertices)
    upper = lower - NUM_TEETH_VERTICES // 2
    assert moved[lower].all() and not moved[upper].any()


def test_full_pose_matches_reference(demo_asset):
    model = FlameModel(demo_asset, dtype=torch.float64)
    rng = np.random.default_rng(1)
    pose = rng.normal(scale=0.2, size=(5, 3))
    out = model(rotation=torch.tensor(pose[0])[None], neck_pose=torch.tensor(pose[1])[None],
                jaw_pose=torch.tensor(pose[2])[None], eyes_pose=torch.tensor(pose[3:].reshape(1, 6)),
                translation=torch.tensor([[0.01, -0.02, 0.3]], dtype=torch.float64))["vertices"][0].numpy()
    np.testing.assert_allclose(out, _numpy_lbs(demo_asset, pose) + [0.01, -0.02, 0.3], atol=1e-10)


def test_batched_differentiable_and_shape_expr(demo_asset):
    model = FlameModel(demo_asset)
    shape = torch.zeros(3, 300, requires_grad=True)
    expr = torch.zeros(3, 100)
    expr[1, 0] = 1.0
    so = torch.zeros(1, demo_asset.num_vertices, 3)
    so[0, 0, 1] = 0.01
    out = model(shape=shape, expr=expr, static_offset=so)
    v = out["vertices"]
    assert v.shape == (3, demo_asset.num_vertices, 3) and v.dtype == torch.float32
    base = torch.as_tensor(demo_asset.v_template, dtype=torch.float32)
    dexpr = torch.as_tensor(demo_asset.exprdirs[..., 0], dtype=torch.float32)
    torch.testing.assert_close(v[1] - v[0], dexpr, atol=1e-6, rtol=0)
    assert abs(float(v[0, 0, 1] - base[0, 1]) - 0.01) < 1e-6  # static offset before skinning
    v.sum().backward()
    assert shape.grad is not None and torch.isfinite(shape.grad).all() and shape.grad[:, :60].abs().sum() > 0
    lm = out["landmarks_mediapipe"]
    assert lm.shape == (3, len(demo_asset.landmarks["mediapipe"]), 3)
    fi, bc = demo_asset.landmarks["ibug68"].face_idx, demo_asset.landmarks["ibug68"].bary
    ref = np.einsum("lk,lkd->ld", bc, v[0].detach().numpy()[demo_asset.faces[fi]])
    np.testing.assert_allclose(out["landmarks_ibug68"][0].detach().numpy(), ref, atol=1e-6)


def test_bundled_extract_is_the_published_file_and_loads_from_any_directory(tmp_path, monkeypatch):
    import hashlib
    import subprocess
    import sys

    basis = bundled_flame_basis()
    notice = (basis.parent / "NOTICE.md").read_text()
    digest = hashlib.sha256(basis.read_bytes()).hexdigest()
    assert digest in notice and "CC-BY-4.0" in notice and "Changes" in notice
    # a fresh cache and an unrelated working directory: the same 10144-face head
    env = {k: v for k, v in __import__("os").environ.items() if k != "POINTILLIST_FLAME_MODEL"}
    env["POINTILLIST_CACHE"] = str(tmp_path / "cache")
    code = "from pointillist_data.flame import resolve_flame_asset as r; a = r(); print(a.num_vertices, a.num_faces)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["5143", "10144"]


def test_teeth_topology_on_real_flame():
    asset = build_demo_asset(0)
    assert asset.num_vertices == 5023 + NUM_TEETH_VERTICES == 5143
    assert asset.num_faces == 9976 + NUM_TEETH_FACES == 10144
    teeth = asset.faces[9976:]
    assert teeth.min() >= 5023, "teeth faces must only use teeth vertices"
    # no degenerate faces, every edge shared by at most two faces, consistent winding
    assert all(len(set(f)) == 3 for f in teeth.tolist())
    edges = np.sort(np.concatenate([teeth[:, [0, 1]], teeth[:, [1, 2]], teeth[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() <= 2
    mesh = trimesh.Trimesh(asset.v_template, teeth, process=False)
    assert mesh.is_winding_consistent
    assert len(mesh.split(only_watertight=False)) == 2  # upper and lower band
    assert trimesh.Trimesh(asset.v_template, asset.faces, process=False).is_winding_consistent
    # the front of the teeth faces the camera (+z), and teeth sit behind the lips
    n = mesh.face_normals
    assert (n[:14, 2] > 0).all() and (n[84:98, 2] > 0).all()
    w = asset.lbs_weights[5023:]
    assert np.all(w[:60, 1] == 1) and np.all(w[60:, 2] == 1)
    assert not asset.exprdirs[5023:].any() and not asset.J_regressor[:, 5023:].any()


def test_teeth_deterministic_and_asset_round_trip(tmp_path, demo_asset):
    again = build_demo_asset(seed=0)
    for k in ("v_template", "faces", "shapedirs", "exprdirs", "J_regressor", "lbs_weights"):
        np.testing.assert_allclose(getattr(again, k), getattr(demo_asset, k), atol=1e-12)
    p = save_flame_asset(again, tmp_path / "head.npz")
    back = load_flame_asset(p)
    assert back.teeth and back.num_faces == again.num_faces
    for k in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "lbs_weights", "parents"):
        np.testing.assert_allclose(getattr(back, k), getattr(again, k))
    assert back.landmarks["ibug68"].indices.tolist() == list(range(68))
    assert back.is_demo and "no substitute for FLAME" in back.meta["licence"]
    # the real FLAME 2023 Open template and identity directions are used unchanged
    with np.load(bundled_flame_basis()) as z:
        np.testing.assert_allclose(back.v_template[:5023], z["v_template"], atol=1e-6)
        np.testing.assert_allclose(back.shapedirs[:5023], z["shapedirs"], atol=1e-6)
        np.testing.assert_array_equal(back.faces[:9976], z["faces"])


def test_demo_head_requirements(demo_asset):
    for a in (demo_asset,):
        assert a.num_joints == 5 and a.n_shape >= 20 and a.n_expr >= 10
        assert np.allclose(a.lbs_weights.sum(1), 1)
        assert len(a.landmarks["ibug68"]) == 68 and len(a.landmarks["mediapipe"]) >= 60
