"""Canonicalisation of a fitted avatar and its tokenized sample."""

from __future__ import annotations

import numpy as np
import torch

from pointillist_data.canonical import CanonicalCloud, canonical_vertices, canonicalize, to_sample
from pointillist_data.flame import FlameModel, FlameParams, face_frames
from pointillist_data.gaussians import read_ply
from pointillist_data.quaternion import quat_to_matrix
from pointillist_data.tokens import DEFAULT_BOX, Vocabulary, decode


def test_canonical_cloud_of_ground_truth(synthetic_capture, demo_asset, tmp_path):
    root, cfg, _ = synthetic_capture
    gt = root / f"{cfg.participants[0]:03d}" / "ground_truth"
    g = read_ply(gt / "point_cloud.ply", demo_asset.num_faces)
    params = FlameParams.load(gt / "flame_param.npz")
    cloud = canonicalize(g, params, demo_asset)
    assert len(cloud) == len(g)
    # canonical = identity shape, zero expression and pose: the FLAME forward with only shape
    model = FlameModel(demo_asset, dtype=torch.float64)
    v = model(shape=torch.as_tensor(params.shape, dtype=torch.float64)[None])["vertices"][0]
    torch.testing.assert_close(canonical_vertices(demo_asset, params), v)
    # GaussianAvatars' binding, written out per Gaussian with the canonical face frames (R, k, T;
    # test_flame_frames checks them against their definition): mu = k R xyz + T, scale = k exp(s),
    # rotation = R rot(q), colour = SH DC * C0 + 0.5, opacity = sigmoid(logit)
    fr = face_frames(v, torch.as_tensor(demo_asset.faces))
    R, k, T = (t.numpy()[g.binding] for t in (fr.R, fr.k, fr.T))
    np.testing.assert_allclose(cloud.points, k[:, None] * np.einsum("nij,nj->ni", R, g.xyz) + T, atol=2e-6, rtol=0)
    np.testing.assert_allclose(cloud.scale, k[:, None] * np.exp(g.log_scale), rtol=1e-5)
    q = g.rotation / np.linalg.norm(g.rotation, axis=1, keepdims=True)
    w, x, y, z = q.T.astype(np.float64)
    local = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)
    np.testing.assert_allclose(quat_to_matrix(torch.as_tensor(cloud.rotation, dtype=torch.float64)).numpy(), R @ local,
                               atol=1e-5)
    np.testing.assert_allclose(cloud.rgb, np.clip(g.sh[:, 0] * 0.28209479177387814 + 0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(cloud.opacity, 1 / (1 + np.exp(-g.opacity_logit)), rtol=1e-6)
    np.testing.assert_array_equal(cloud.binding, g.binding)
    p = cloud.save(tmp_path / "canonical.npz")
    back = CanonicalCloud.load(p)
    np.testing.assert_array_equal(back.points, cloud.points)
    s = to_sample("900", cloud, np.zeros((8, 8, 3), np.uint8), DEFAULT_BOX, Vocabulary())
    pts, b = decode(s.tokens)
    np.testing.assert_array_equal(b, s.binding)
    assert np.abs(pts - s.points).max() <= DEFAULT_BOX.bin_size(1024).max() / 2 + 1e-6
