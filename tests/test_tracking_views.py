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


def test_banded_mesh_render_equals_the_whole_render(demo_asset):
    """Checkpointed horizontal bands give the whole render's pixels and gradients."""
    from pointillist_data.flame.model import FlameModel
    from pointillist_data.tracking.mesh_gaussians import MeshGaussians

    model = FlameModel(demo_asset)
    with torch.no_grad():
        v0 = model(shape=torch.zeros(1, demo_asset.n_shape))["vertices"][0]
    flip = torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])  # the face towards an OpenCV camera
    S = 64
    K = torch.tensor([[[S * 1.6, 0, S / 2 + 0.3], [0, S * 1.6, S / 2 + 3.3], [0, 0, 1]]])
    colors = torch.rand(demo_asset.num_faces, 3, generator=torch.Generator().manual_seed(0))
    target = torch.linspace(0, 1, S * S * 3).reshape(1, S, S, 3)
    got = []
    for band_pixels in (0, 16 * S):  # whole; 4 bands of 16 rows
        v = (v0 @ flip.T + torch.tensor([0, 0, 0.5])).requires_grad_(True)
        c = colors.clone().requires_grad_(True)
        rgb, alpha = MeshGaussians(model.faces, 3, band_pixels=band_pixels).render(v, c, torch.eye(4)[None], K, S, S)
        (((rgb - target) ** 2).mean() + alpha.mean()).backward()
        got.append((rgb.detach(), alpha.detach(), v.grad, c.grad))
    assert float(got[0][1].mean()) > 0.3  # the head fills the image
    for a, b in zip(*got, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=5e-3 * float(a.abs().max()))
