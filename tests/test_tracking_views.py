"""The tracker's view cache: uint8 storage, values and silhouette weights against references
computed here from the inputs."""

from __future__ import annotations

import numpy as np
import torch

from pointillist_data.tracking.views import ViewCache


def _data(T=3, C=2, H=12, W=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(T, C, H, W, 3), dtype=np.uint8)
    masks = np.zeros((T, C, H, W), np.uint8)
    masks[:, :, 2:10, 3:13] = 255  # an 8 x 10 rectangle
    return images, masks


def test_views_equal_the_frames_and_are_kept_as_uint8():
    images, masks = _data()
    views = ViewCache(images, masks, (16, 12), (16, 12), band=2, device=torch.device("cpu"), capacity=4)
    v = views(1, 1)
    np.testing.assert_array_equal(v["rgb"].numpy(), images[1, 1].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(v["mask"].numpy(), masks[1, 1] / 255.0)
    # band 2: the edge's 2 pixels on each side are ignored, the eroded mask is the rectangle less 2 pixels
    care = np.ones((12, 16), np.float32)
    care[0:12, 1:15] = 0.0
    care[4:8, 5:11] = 1.0
    inner = np.zeros((12, 16), np.float32)
    inner[4:8, 5:11] = 1.0
    np.testing.assert_array_equal(v["inner"].numpy(), inner)
    np.testing.assert_array_equal(v["care"].numpy(), care)
    for t in range(3):
        for c in range(2):
            views(t, c)
    assert len(views) == 4  # bounded
    assert all(x.dtype == torch.uint8 for kept in views._kept.values() for x in kept.values())


def test_views_at_half_scale_are_area_averages():
    images, masks = _data(H=12, W=16)
    views = ViewCache(images, None, (8, 6), (16, 12), band=1, device=torch.device("cpu"))
    v = views(0, 0)
    ref = images[0, 0].astype(np.float64).reshape(6, 2, 8, 2, 3).mean((1, 3))
    assert v["rgb"].shape == (6, 8, 3) and "mask" not in v
    np.testing.assert_allclose(v["rgb"].numpy() * 255, ref, atol=0.5 + 1e-3)  # quantised to uint8
