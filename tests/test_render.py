"""The CPU rasteriser against a dense brute-force reference, analytic Gaussians and gsplat."""

from __future__ import annotations

import pytest
import torch

from pointillist_data.render import eval_sh, gsplat_available, render_gaussians, rgb_to_sh


def _dense_reference(means, quats, scales, opac, colors, viewmat, K, W, H, bg=None):
    """Every pixel against every Gaussian, written out independently of the package.

    Same semantics as gsplat: EWA projection with the Jacobian clamped to 1.3x the field
    of view, eps2d 0.3, 3-sigma bounding box, alpha = min(0.999, o exp(-sigma)) kept when
    >= 1/255, front-to-back by camera depth, stop before transmittance drops to 1e-4.
    """
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    Rq = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).view(-1, 3, 3)
    M = Rq * scales[:, None, :]
    Rv, tv = viewmat[:3, :3], viewmat[:3, 3]
    cov = Rv @ (M @ M.transpose(1, 2)) @ Rv.T
    pc = means @ Rv.T + tv
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    limx = ((W - cx) / fx + 0.3 * W / (2 * fx), cx / fx + 0.3 * W / (2 * fx))
    limy = ((H - cy) / fy + 0.3 * H / (2 * fy), cy / fy + 0.3 * H / (2 * fy))
    zc = pc[:, 2]
    tx = zc * torch.clamp(pc[:, 0] / zc, -limx[1], limx[0])
    ty = zc * torch.clamp(pc[:, 1] / zc, -limy[1], limy[0])
    J = torch.zeros(len(means), 2, 3, dtype=means.dtype)
    J[:, 0, 0], J[:, 0, 2] = fx / zc, -fx * tx / zc**2
    J[:, 1, 1], J[:, 1, 2] = fy / zc, -fy * ty / zc**2
    c2 = J @ cov @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=means.dtype)
    m2 = torch.stack([fx * pc[:, 0] / zc + cx, fy * pc[:, 1] / zc + cy], -1)
    inv = torch.linalg.inv(c2)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5, indexing="ij")
    d = torch.stack([xs, ys], -1).view(-1, 1, 2) - m2[None]  # (P, N, 2)
    sig = 0.5 * torch.einsum("pni,nij,pnj->pn", d, inv, d)
    alpha = torch.clamp(opac[None] * torch.exp(-sig), max=0.999)
    ex, ey = 3 * c2[:, 0, 0].sqrt(), 3 * c2[:, 1, 1].sqrt()
    inside = (d[..., 0].abs() <= ex) & (d[..., 1].abs() <= ey) & (zc > 0.01)[None]
    alpha = torch.where(inside & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
    order = torch.argsort(zc)
    a = alpha[:, order]
    T = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
    keep = (T * (1 - a)) > 1e-4
    wgt = a * T * keep
    img = wgt @ colors[order]
    acc = wgt.sum(1, keepdim=True)
    if bg is not None:
        img = img + (1 - acc) * bg
    return img.view(H, W, -1), acc.view(H, W, 1)


def _scene(N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(N, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.3, 0.3, 0.2], dtype=dtype)
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.randn(N, 3, generator=g, dtype=dtype) * 0.5 - 4.0)
    opac = torch.rand(N, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(N, 3, generator=g, dtype=dtype)
    view = torch.eye(4, dtype=dtype)
    view[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=dtype)  # looks down -z
    view[2, 3] = 0.9
    K = torch.tensor([[60.0, 0, 17.3], [0, 62.0, 13.1], [0, 0, 1]], dtype=dtype)  # off-centre
    return means, quats, scales, opac, colors, view, K


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("N", [1, 40, 150])
def test_matches_dense_reference_images_and_gradients(dtype, tol, N):
    W, H = 32, 26
    means, quats, scales, opac, colors, view, K = _scene(N, dtype, seed=N)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=dtype)
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    out = render_gaussians(*params, view[None], K[None], W, H, backgrounds=bg[None], backend="torch")
    ref_params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    ref_img, ref_a = _dense_reference(*ref_params, view, K, W, H, bg)
    torch.testing.assert_close(out.rgb[0], ref_img, atol=tol, rtol=0)
    torch.testing.assert_close(out.alpha[0], ref_a, atol=tol, rtol=0)
    wts = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (out.rgb[0] * wts).sum().backward()
    (ref_img * wts).sum().backward()
    for name, p, r in zip(("means", "quats", "scales", "opacities", "colors"), params, ref_params, strict=True):
        scale = r.grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(p.grad / scale, r.grad / scale, atol=tol * 10, rtol=0, msg=f"gradient of {name}")
    assert out.meta["num_fragments"] < N * W * H or N == 1


def test_isotropic_gaussian_is_analytic_2d_gaussian():
    dtype = torch.float64
    W, H = 41, 37
    f, z, s, o = 80.0, 2.0, 0.05, 0.6
    K = torch.tensor([[f, 0, 20.0], [0, f, 18.0], [0, 0, 1]], dtype=dtype)
    view = torch.eye(4, dtype=dtype)
    mean = torch.tensor([[0.1, -0.05, z]], dtype=dtype)
    out = render_gaussians(mean, torch.tensor([[1.0, 0, 0, 0]], dtype=dtype), torch.full((1, 3), s, dtype=dtype),
                           torch.tensor([o], dtype=dtype), torch.ones(1, 1, dtype=dtype), view[None], K[None], W, H)
    u0, v0 = f * 0.1 / z + 20.0, f * -0.05 / z + 18.0
    # EWA footprint of an isotropic Gaussian off the optical axis: (f s / z)^2 (I + a a^T)
    # with a = (x / z, y / z), plus gsplat's eps2d on the diagonal.
    a, b = 0.1 / z, -0.05 / z
    k2 = (f * s / z) ** 2
    cov = torch.tensor([[k2 * (1 + a * a) + 0.3, k2 * a * b], [k2 * a * b, k2 * (1 + b * b) + 0.3]], dtype=dtype)
    inv = torch.linalg.inv(cov)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype) + 0.5, torch.arange(W, dtype=dtype) + 0.5, indexing="ij")
    dx, dy = xs - u0, ys - v0
    g = o * torch.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy))
    inside = (dx.abs() <= 3 * cov[0, 0].sqrt()) & (dy.abs() <= 3 * cov[1, 1].sqrt()) & (g >= 1 / 255)
    torch.testing.assert_close(out.alpha[0, ..., 0], torch.where(inside, g, 0 * g), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.depth[0, ..., 0], z * out.alpha[0, ..., 0], atol=1e-12, rtol=0)


def test_sh_degree0_equals_rgb_and_degree1_is_view_dependent():
    means, quats, scales, opac, colors, view, K = _scene(30, torch.float64)
    sh = torch.zeros(30, 4, 3, dtype=torch.float64)
    sh[:, 0] = rgb_to_sh(colors)
    a = render_gaussians(means, quats, scales, opac, colors, view[None], K[None], 24, 24)
    b = render_gaussians(means, quats, scales, opac, sh, view[None], K[None], 24, 24, sh_degree=1)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-12, rtol=0)
    d = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    c = torch.randn(5, 4, 3, dtype=torch.float64)
    C0, C1 = 0.28209479177387814, 0.4886025119029199
    ref = C0 * c[:, 0] - C1 * d[:, 1:2] * c[:, 1] + C1 * d[:, 2:3] * c[:, 2] - C1 * d[:, 0:1] * c[:, 3] + 0.5
    torch.testing.assert_close(eval_sh(1, c, d), ref.clamp_min(0))
    with pytest.raises(ValueError, match="degree"):
        eval_sh(4, c, d)


def test_bad_shapes_and_backend():
    means, quats, scales, opac, colors, view, K = _scene(5, torch.float32)
    with pytest.raises(ValueError, match="'quats'"):
        render_gaussians(means, quats[:, :3], scales, opac, colors, view[None], K[None], 8, 8)
    with pytest.raises(ValueError, match="unknown backend"):
        render_gaussians(means, quats, scales, opac, colors, view[None], K[None], 8, 8, backend="vulkan")
    if not gsplat_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            render_gaussians(means, quats, scales, opac, colors, view[None], K[None], 8, 8, backend="gsplat")


@pytest.mark.skipif(not gsplat_available(), reason="gsplat parity needs CUDA and gsplat")
def test_parity_with_gsplat():  # pragma: no cover - runs on GPU machines only
    means, quats, scales, opac, colors, view, K = (t.cuda() for t in _scene(300, torch.float32))
    a = render_gaussians(means, quats, scales, opac, colors, view[None], K[None], 64, 48, backend="torch")
    b = render_gaussians(means, quats, scales, opac, colors, view[None], K[None], 64, 48, backend="gsplat")
    # gsplat cuts Gaussians at 16x16 tiles rather than 3-sigma boxes: edges differ by < 2/255
    assert (a.rgb - b.rgb).abs().mean() < 2e-3
    assert (a.rgb - b.rgb).abs().max() < 0.05


def test_means2d_collects_view_space_gradients():
    means, quats, scales, opac, colors, view, K = _scene(20, torch.float64)
    means = means.clone().requires_grad_(True)
    out = render_gaussians(means, quats, scales, opac, colors, view[None].repeat(2, 1, 1), K[None].repeat(2, 1, 1), 24, 24)
    m2 = out.meta["means2d"]
    m2.retain_grad()
    out.rgb.sum().backward()
    assert m2.shape == (2, 20, 2) and m2.grad is not None and m2.grad.abs().sum() > 0
