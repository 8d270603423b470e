"""The CPU rasteriser against a dense reference written from gsplat 1.5.3's rules, analytic
Gaussians and gsplat; densification statistics through both backends' code path."""

from __future__ import annotations

import math

import pytest
import torch

from pointillist_data.render import eval_sh, gsplat_available, render_gaussians, rgb_to_sh


def _dense_reference(means, quats, scales, opac, colors, viewmat, K, W, H, bg=None, means2d_hook=None):
    """Every pixel against every Gaussian, written from gsplat 1.5.3's documented rules,
    independently of the package.

    Projection (``fully_fused_projection``): EWA with the Jacobian clamped to 1.3x the field
    of view, eps2d 0.3 on the 2D covariance, valid when near < z < far and det > 0.
    Extent: per axis ``ceil(3.33 sqrt(cov2d_ii))`` (the pure-torch reference); a Gaussian
    whose extent box misses the image gets radii 0 and draws nothing. Rasterisation: every
    pixel inside that extent with ``sigma >= 0`` and alpha = min(0.999, o exp(-sigma))
    >= 1/255 contributes, front to back by camera depth, stopping before the transmittance
    drops to 1e-4. Also returns the radii gsplat's CUDA projection reports when given the
    opacities: extent ``min(3.33, sqrt(2 ln(255 o)))``, culled below opacity 1/255.
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
    if means2d_hook is not None:  # lets a caller route the image through its own means2d tensor
        m2 = means2d_hook(m2)
    det = c2[:, 0, 0] * c2[:, 1, 1] - c2[:, 0, 1] ** 2
    valid = ((zc > 0.01) & (zc < 1e10) & (det > 0)).detach()
    sd = torch.stack([c2[:, 0, 0], c2[:, 1, 1]], -1).detach().sqrt()

    def radii_for(ext):
        r = torch.ceil(ext[:, None] * sd)
        m = m2.detach()
        on = (m[:, 0] + r[:, 0] > 0) & (m[:, 0] - r[:, 0] < W) & (m[:, 1] + r[:, 1] > 0) & (m[:, 1] - r[:, 1] < H)
        return torch.where((valid & on)[:, None], r, 0 * r).int()

    radii = radii_for(torch.full_like(zc, 3.33).detach())
    o = opac.detach()
    aware = torch.sqrt(2 * torch.log(torch.clamp(o * 255, min=1.0)))
    cuda_radii = torch.where((o >= 1 / 255)[:, None], radii_for(torch.minimum(aware, torch.full_like(aware, 3.33))), 0)
    inv = torch.linalg.inv(c2)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5, indexing="ij")
    d = torch.stack([xs, ys], -1).view(-1, 1, 2) - m2[None]  # (P, N, 2)
    sig = 0.5 * torch.einsum("pni,nij,pnj->pn", d, inv, d)
    alpha = torch.clamp(opac[None] * torch.exp(-sig), max=0.999)
    inside = ((d[..., 0].abs() <= radii[:, 0]) & (d[..., 1].abs() <= radii[:, 1]) & (radii > 0).all(-1)).detach()
    alpha = torch.where(inside & (sig >= 0) & (alpha >= 1 / 255), alpha, torch.zeros_like(alpha))
    order = torch.argsort(zc.detach())
    a = alpha[:, order]
    T = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
    keep = (T * (1 - a)) > 1e-4
    wgt = a * T * keep
    img = wgt @ colors[order]
    acc = wgt.sum(1, keepdim=True)
    depth = wgt @ zc[order, None]
    if bg is not None:
        img = img + (1 - acc) * bg
    return {"rgb": img.view(H, W, -1), "alpha": acc.view(H, W, 1), "depth": depth.view(H, W, 1), "radii": radii,
            "cuda_radii": cuda_radii, "means2d": m2, "depths": zc}


def _scene(N, dtype, seed=0, near=False):
    """Random Gaussians in front of an off-centre camera at z = 0.9 (``near``: at 2-12 cm
    from the camera, big on screen and reaching past the image borders)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(N, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.3, 0.3, 0.2], dtype=dtype)
    if near:
        means = means * torch.tensor([1.0, 1.0, 0.5], dtype=dtype) + torch.tensor([0.0, 0.0, 0.83], dtype=dtype)
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
@pytest.mark.parametrize("N,near", [(1, False), (40, False), (150, False), (60, True)])
def test_matches_dense_reference_images_and_gradients(dtype, tol, N, near):
    W, H = 32, 26
    means, quats, scales, opac, colors, view, K = _scene(N, dtype, seed=N, near=near)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=dtype)
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    out = render_gaussians(*params, view[None], K[None], W, H, backgrounds=bg[None], backend="torch")
    ref_params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    ref = _dense_reference(*ref_params, view, K, W, H, bg)
    torch.testing.assert_close(out.rgb[0], ref["rgb"], atol=tol, rtol=0)
    torch.testing.assert_close(out.alpha[0], ref["alpha"], atol=tol, rtol=0)
    torch.testing.assert_close(out.depth[0], ref["depth"], atol=tol, rtol=0)
    radii = out.meta["radii"][0]
    assert out.meta["radii"].shape == (1, N, 2) and radii.dtype == torch.int32
    if dtype == torch.float64:
        assert torch.equal(radii, ref["cuda_radii"])
    else:  # float32 may round a radius at an integer boundary the other way
        assert (radii - ref["cuda_radii"]).abs().max() <= 1
        assert torch.equal((radii > 0).all(-1), (ref["cuda_radii"] > 0).all(-1))
    wts = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (out.rgb[0] * wts).sum().backward()
    (ref["rgb"] * wts).sum().backward()
    for name, p, r in zip(("means", "quats", "scales", "opacities", "colors"), params, ref_params, strict=True):
        scale = r.grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(p.grad / scale, r.grad / scale, atol=tol * 10, rtol=0, msg=f"gradient of {name}")
    assert out.meta["num_fragments"] < N * W * H or N == 1
    if near:  # the scene does reach past the borders and has Gaussians off the image
        assert ((radii > 0).all(-1) & ((ref["means2d"][:, 0] < 0) | (ref["means2d"][:, 0] > W))).any()
        assert (radii == 0).all(-1).any()


def test_single_gaussian_keeps_gsplat_extent():
    """Opacity 0.9, 2D sigma 2.2 px: 7 px from the centre alpha is 0.9 exp(-0.5 (7/2.2)^2)
    = 0.0057 >= 1/255, inside gsplat's extent (a 3-sigma box would cut it at 6.6 px)."""
    dtype = torch.float64
    f, z, o = 100.0, 1.0, 0.9
    s = math.sqrt(2.2**2 - 0.3) * z / f  # (f s / z)^2 + eps2d = 2.2^2
    W = H = 31
    K = torch.tensor([[f, 0, 15.5], [0, f, 15.5], [0, 0, 1]], dtype=dtype)  # the mean projects on pixel (15, 15)'s centre
    out = render_gaussians(torch.tensor([[0.0, 0, z]], dtype=dtype), torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
                           torch.full((1, 3), s, dtype=dtype), torch.tensor([o], dtype=dtype),
                           torch.ones(1, 1, dtype=dtype), torch.eye(4, dtype=dtype)[None], K[None], W, H)
    a = out.alpha[0, 15, :, 0]
    for dx in range(0, 16):
        want = o * math.exp(-0.5 * (dx / 2.2) ** 2)
        assert a[15 + dx].item() == pytest.approx(want if want >= 1 / 255 else 0.0, abs=1e-12), dx
    assert a[22].item() == pytest.approx(0.005703, abs=5e-6) and a[22].item() >= 1 / 255
    extent = min(3.33, math.sqrt(2 * math.log(255 * o)))
    assert out.meta["radii"][0, 0].tolist() == [math.ceil(extent * 2.2)] * 2


def test_radii_are_zero_for_gaussians_off_the_image_behind_or_transparent():
    dtype = torch.float64
    K = torch.tensor([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]], dtype=dtype)
    means = torch.tensor([[0.0, 0.0, 1.0],    # centre of the image
                          [2.0, 0.0, 1.0],    # in front of the camera, 100 px right of a 32 px image
                          [0.36, 0.0, 1.0],   # centre 2 px right of the border, footprint reaching in
                          [0.0, 0.0, -1.0],   # behind the camera
                          [0.0, 0.0, 1.0]], dtype=dtype)  # opacity below 1/255
    opac = torch.tensor([0.8, 0.8, 0.8, 0.8, 0.003], dtype=dtype)
    out = render_gaussians(means, torch.tensor([[1.0, 0, 0, 0]] * 5, dtype=dtype), torch.full((5, 3), 0.02, dtype=dtype),
                           opac, torch.ones(5, 3, dtype=dtype), torch.eye(4, dtype=dtype)[None], K[None], 32, 24)
    vis = (out.meta["radii"][0] > 0).all(-1)
    assert vis.tolist() == [True, False, True, False, False]
    assert out.alpha[0, :, -1].max() > 0  # the Gaussian past the border still draws its edge


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
    # gsplat: every pixel whose alpha reaches 1/255 (its extent holds all of them)
    torch.testing.assert_close(out.alpha[0, ..., 0], torch.where(g >= 1 / 255, g, 0 * g), atol=1e-12, rtol=0)
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
    # same extent rule and compositing: float32 round-off only (CUDA's fast log / exp)
    assert (a.rgb - b.rgb).abs().max() < 1e-4
    assert b.meta["radii"].shape == a.meta["radii"].shape == (1, 300, 2)
    assert (a.meta["radii"] - b.meta["radii"]).abs().max() <= 1


def test_means2d_collects_view_space_gradients():
    means, quats, scales, opac, colors, view, K = _scene(20, torch.float64)
    means = means.clone().requires_grad_(True)
    out = render_gaussians(means, quats, scales, opac, colors, view[None].repeat(2, 1, 1), K[None].repeat(2, 1, 1), 24, 24)
    m2 = out.meta["means2d"]
    m2.retain_grad()
    out.rgb.sum().backward()
    assert m2.shape == (2, 20, 2) and m2.grad is not None and m2.grad.abs().sum() > 0


def _fake_gsplat_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                               sh_degree=None, backgrounds=None, render_mode="RGB", packed=True, **kw):
    """Stands in for ``gsplat.rasterization`` on the CPU: gsplat's documented outputs
    (``RGB+D`` colours, alphas, ``meta`` with ``radii (C, N, 2)`` int32 and the ``means2d
    (C, N, 2)`` the images are computed from), from the dense reference."""
    assert render_mode == "RGB+D" and not packed and sh_degree is None
    C = len(viewmats)
    first = [_dense_reference(means, quats, scales, opacities, colors, viewmats[c], Ks[c], width, height)["means2d"]
             for c in range(C)]
    means2d = torch.stack(first)  # the images below are computed from this tensor, as in gsplat
    refs = [_dense_reference(means, quats, scales, opacities, colors, viewmats[c], Ks[c], width, height,
                             None if backgrounds is None else backgrounds[c], means2d_hook=lambda _, c=c: means2d[c])
            for c in range(C)]
    out = torch.stack([torch.cat([r["rgb"], r["depth"]], -1) for r in refs])
    meta = {"radii": torch.stack([r["cuda_radii"] for r in refs]), "means2d": means2d,
            "depths": torch.stack([r["depths"] for r in refs])}
    return out, torch.stack([r["alpha"] for r in refs]), meta


def test_densification_statistics_through_both_backends():
    """The fitting stage's densification statistics from the torch backend and from gsplat's
    output format (radii (C, N, 2), 0 off the image) go through the same code and agree."""
    from pointillist_data.fitting.density import accumulate_view_gradients
    from pointillist_data.render.api import _render_gsplat

    dtype, W, H, N = torch.float64, 24, 20, 40
    means, quats, scales, opac, colors, view, K = _scene(N, dtype, seed=3, near=True)
    view2 = view.clone()
    view2[0, 3] = 0.05  # a second camera, shifted sideways
    views, Ks = torch.stack([view, view2]), torch.stack([K, K])
    bg = torch.tensor([[0.2, 0.3, 0.4]] * 2, dtype=dtype)
    wts = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(4), dtype=dtype)
    stats = {}
    for backend in ("torch", "gsplat"):
        p = means.clone().requires_grad_(True)
        if backend == "torch":
            out = render_gaussians(p, quats, scales, opac, colors, views, Ks, W, H, backgrounds=bg, backend="torch")
        else:
            out = _render_gsplat(p, quats, scales, opac, colors, views, Ks, W, H, bg, None,
                                 rasterization=_fake_gsplat_rasterization)
        assert out.meta["radii"].shape == (2, N, 2) and out.meta["backend"] == backend
        m2 = out.meta["means2d"]
        m2.retain_grad()
        (out.rgb * wts).sum().backward()
        acc, cnt = torch.zeros(N, dtype=dtype), torch.zeros(N)
        accumulate_view_gradients(acc, cnt, m2.grad, out.meta["radii"], W, H)
        stats[backend] = acc, cnt, out.rgb.detach()
    torch.testing.assert_close(stats["torch"][2], stats["gsplat"][2], atol=1e-9, rtol=0)
    torch.testing.assert_close(stats["torch"][0], stats["gsplat"][0], atol=1e-9, rtol=1e-9)
    assert torch.equal(stats["torch"][1], stats["gsplat"][1])
    # independently: a Gaussian counts once per camera whose image its extent box overlaps
    refs = [_dense_reference(means, quats, scales, opac, colors, v, K, W, H) for v in views]
    expected = sum((r["cuda_radii"] > 0).all(-1).float() for r in refs)
    assert torch.equal(stats["torch"][1], expected)
    assert (expected < 2).any() and (expected > 0).any()  # some are off the image in a camera
    assert (stats["torch"][0][expected == 0] == 0).all()
