"""Renderer: forward+backward time of the CPU path vs a dense pixels x Gaussians reference.

Scenes are N small Gaussians (global scale about 1 mm, like a fitted avatar of 20-40k
points) bound to random faces of the head mesh, seen by one camera 1 m away that frames
the head. Targets on a 2-core machine: <= 0.5 s for 40k at 128x128; >= 50x faster than the
dense reference at 20k and 128x128.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pointillist_data.flame import face_frames, local_to_global, resolve_flame_asset
from pointillist_data.render import render_gaussians
from pointillist_data.render.projection import project_gaussians, screen_radii
from pointillist_data.viz import look_at_viewmat


def head_scene(N: int, seed: int = 0):
    a = resolve_flame_asset()
    v = torch.tensor(a.v_template, dtype=torch.float32)
    fr = face_frames(v, torch.tensor(a.faces))
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, a.num_faces, (N,), generator=g)
    ls = torch.log(0.001 / fr.k[b])[:, None] + 0.3 * torch.randn(N, 3, generator=g)
    mu, sc, q = local_to_global(fr, b, torch.rand(N, 3, generator=g) * 0.3, ls, torch.randn(N, 4, generator=g))
    return mu, q, sc, torch.full((N,), 0.8), torch.rand(N, 3, generator=g)


def camera(W: int, H: int):
    vm = torch.tensor(look_at_viewmat(np.array([0, 0, 1.0]), np.array([0, -0.03, 0.0])), dtype=torch.float32)
    f = H / 2 / np.tan(np.radians(15) / 2)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=torch.float32)
    return vm[None], K[None]


def dense_fwd_bwd(means, quats, scales, opac, colors, vm, K, W, H, chunk=256):
    """Dense reference: every pixel against every Gaussian, chunked over pixels, with backward."""
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    t0 = time.perf_counter()
    proj = project_gaussians(params[0], params[1], params[2], vm[0], K[0], W, H)
    m2 = proj.means2d.detach().requires_grad_(True)
    con = proj.conics.detach().requires_grad_(True)
    order = torch.argsort(proj.depths.detach())
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    radii = screen_radii(proj, params[3], W, H)  # gsplat 1.5.3's extent; 0 = culled
    ex, ey = radii[:, 0], radii[:, 1]
    for s in range(0, len(pix), chunk):
        d = pix[s:s + chunk, None] - m2[None]
        sig = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
        a = torch.clamp(params[3][None] * torch.exp(-sig), max=0.999)
        inside = (d[..., 0].abs() <= ex) & (d[..., 1].abs() <= ey) & (a >= 1 / 255) & (sig >= 0) & (radii > 0).all(-1)
        a = torch.where(inside, a, 0 * a)[:, order]
        T = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
        w = a * T * ((T * (1 - a)) > 1e-4)
        (w @ params[4][order]).sum().backward()
    torch.autograd.backward([proj.means2d, proj.conics], [m2.grad, con.grad])
    return time.perf_counter() - t0


def run() -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    for N in (5000, 20000, 40000):
        scene = head_scene(N)
        for W, H in ((64, 64), (128, 128), (110, 160)):
            vm, K = camera(W, H)
            times = []
            for _ in range(4):
                params = [t.clone().requires_grad_(True) for t in scene]
                t0 = time.perf_counter()
                r = render_gaussians(*params, vm, K, W, H, backend="torch")
                r.rgb.sum().backward()
                times.append(time.perf_counter() - t0)
            out[f"fwd_bwd_s_N{N}_{W}x{H}"] = round(float(np.median(times[1:])), 4)
            out[f"fragments_N{N}_{W}x{H}"] = r.meta["num_fragments"]
    vm, K = camera(128, 128)
    dense = dense_fwd_bwd(*head_scene(20000), vm, K, 128, 128)
    out["dense_reference_fwd_bwd_s_N20000_128x128"] = round(dense, 3)
    out["speedup_vs_dense_N20000_128x128"] = round(dense / out["fwd_bwd_s_N20000_128x128"], 1)
    out["target_fwd_bwd_s_N40000_128x128_max"] = 0.5
    out["target_speedup_min"] = 50
    return out
