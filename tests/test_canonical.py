"""Canonicalisation of a fitted avatar and its tokenized sample."""

from __future__ import annotations

import numpy as np
import torch

from pointillist_data.canonical import CanonicalCloud, canonical_vertices, canonicalize, to_sample
from pointillist_data.flame import FlameModel, FlameParams, face_frames
from pointillist_data.gaussians import read_ply
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
    fr = face_frames(v, torch.as_tensor(demo_asset.faces))
    centroids = fr.T[torch.as_tensor(cloud.binding)].numpy()
    dist = np.linalg.norm(cloud.points - centroids, axis=1)
    assert np.median(dist) < 0.006 and dist.max() < 0.05  # points sit on (or just above) their faces
    assert np.all((cloud.opacity > 0) & (cloud.opacity < 1)) and np.allclose(np.linalg.norm(cloud.rotation, axis=1), 1, atol=1e-5)
    p = cloud.save(tmp_path / "canonical.npz")
    back = CanonicalCloud.load(p)
    np.testing.assert_array_equal(back.points, cloud.points)
    s = to_sample("900", cloud, np.zeros((8, 8, 3), np.uint8), DEFAULT_BOX, Vocabulary())
    pts, b = decode(s.tokens)
    np.testing.assert_array_equal(b, s.binding)
    assert np.abs(pts - s.points).max() <= DEFAULT_BOX.bin_size(1024).max() / 2 + 1e-6
