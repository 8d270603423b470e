"""Binding-based animation (paper 4.3) against FLAME's own forward pass and rigid motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from smplx.lbs import batch_rodrigues

from pointillist_data.animation import Animator, bind_points
from pointillist_data.flame import FlameModel
from pointillist_data.quaternion import quat_to_matrix


@pytest.fixture(scope="module")
def rig(demo_asset):
    """FLAME in float64 with random pose correctives (the demo head has none) and an identity."""
    g = torch.Generator().manual_seed(0)
    fl = FlameModel(demo_asset, dtype=torch.float64)
    fl.posedirs = torch.randn(fl.posedirs.shape, generator=g, dtype=torch.float64) * 1e-3
    shape = torch.randn(300, generator=g, dtype=torch.float64) * 0.6
    so = torch.randn(1, demo_asset.num_vertices, 3, generator=g, dtype=torch.float64) * 1e-3
    return fl, shape, so, Animator(fl, shape, so)


def _surface_points(an: Animator, n: int, seed: int, height: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    faces = an.faces
    f = torch.randint(0, faces.shape[0], (n,), generator=g)
    b = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((n,))
    tri = an.canonical_vertices[faces[f]]
    p = torch.einsum("nk,nkd->nd", b, tri)
    nrm = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    p = p + height * torch.randn(n, 1, generator=g, dtype=torch.float64) * nrm / nrm.norm(dim=-1, keepdim=True)
    return p, f, b


def _random_gaussians(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.01 + 1e-3, q / q.norm(dim=-1, keepdim=True)


def _motion(T: int, seed: int, rigid: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: torch.randn(*s, generator=g, dtype=torch.float64) * scale  # noqa: E731
    p = {"rotation": r(T, 3, scale=0.4), "translation": r(T, 3, scale=0.05)}
    if not rigid:
        p.update(expr=r(T, 100, scale=1.0), neck_pose=r(T, 3, scale=0.2), jaw_pose=r(T, 3, scale=0.15),
                 eyes_pose=r(T, 6, scale=0.2))
    return p


@pytest.mark.parametrize("mode", ["barycentric", "face_frame"])
def test_identity_at_canonical_parameters(rig, mode):
    _, _, _, an = rig
    p, f, _ = _surface_points(an, 400, 1, height=0.004)
    s, q = _random_gaussians(400, 2)
    zero = {k: torch.zeros(2, d, dtype=torch.float64) for k, d in
            (("rotation", 3), ("translation", 3), ("neck_pose", 3), ("jaw_pose", 3), ("eyes_pose", 6), ("expr", 100))}
    a = an.animate(p, f, zero, s, q, mode)
    torch.testing.assert_close(a.means, p.expand(2, -1, -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(a.scales, s.expand(2, -1, -1), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(quat_to_matrix(a.quats), quat_to_matrix(q).expand(2, -1, -1, -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(a.vertices[0], an.canonical_vertices, atol=1e-12, rtol=0)


def test_point_on_a_vertex_moves_exactly_as_the_vertex(rig):
    fl, shape, so, an = rig
    faces = fl.faces
    vids = torch.tensor([0, 17, 1203, 2500, 3931, 5000, fl.num_vertices - 1])  # the last one is a tooth
    # each vertex bound to a face using it, at any corner
    fids = torch.stack([(faces == v).any(1).nonzero()[-1, 0] for v in vids])
    params = _motion(4, 3)
    a = an.animate(an.canonical_vertices[vids], fids, params)
    ref = fl(shape=shape[None].expand(4, -1), static_offset=so, **params)["vertices"][:, vids]  # FLAME itself
    torch.testing.assert_close(a.means, ref, atol=1e-12, rtol=0)


def test_surface_points_follow_the_mesh_under_expression(rig):
    # without pose the skinning is the identity, so a surface point must stay the same
    # barycentric combination of the (expression-deformed) triangle
    fl, shape, so, an = rig
    p, f, b = _surface_points(an, 300, 4)
    expr = torch.randn(3, 100, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = an.animate(p, f, {"expr": expr})
    verts = fl(shape=shape[None].expand(3, -1), static_offset=so, expr=expr)["vertices"]
    ref = torch.einsum("nk,tnkd->tnd", b, verts[:, fl.faces[f]])
    torch.testing.assert_close(a.means, ref, atol=1e-12, rtol=0)


def test_modes_agree_under_rigid_head_motion(rig):
    fl, _, _, an = rig
    params = _motion(3, 6, rigid=True)
    s, q = _random_gaussians(500, 7)
    on, f_on, _ = _surface_points(an, 250, 8)
    off, f_off, _ = _surface_points(an, 250, 9, height=0.003)
    p, f = torch.cat([on, off]), torch.cat([f_on, f_off])
    a = an.animate(p, f, params, s, q, "barycentric")
    b = an.animate(p, f, params, s, q, "face_frame")
    # reference: a rigid motion about FLAME's root joint, then the translation
    J0 = (fl.J_regressor @ an.canonical_vertices)[0]
    R = batch_rodrigues(params["rotation"])
    ref = torch.einsum("tij,nj->tni", R, p - J0) + J0 + params["translation"][:, None]
    for x in (a, b):
        torch.testing.assert_close(x.means, ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(x.scales, s.expand(3, -1, -1), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(quat_to_matrix(x.quats), R[:, None] @ quat_to_matrix(q), atol=1e-7, rtol=0)


@pytest.mark.parametrize("mode", ["barycentric", "face_frame"])
def test_animation_is_differentiable(rig, mode):
    _, _, _, an = rig
    p, f, _ = _surface_points(an, 50, 10, height=0.002)
    s, q = _random_gaussians(50, 11)
    leaves = [t.clone().requires_grad_(True) for t in (p, s, q)]
    params = {k: v.requires_grad_(True) for k, v in _motion(2, 12).items()}
    a = an.animate(*leaves[:1], f, params, leaves[1], leaves[2], mode)
    (a.means.square().sum() + a.scales.sum() + a.quats[..., 1:].sum()).backward()
    for t in [*leaves, params["expr"], params["jaw_pose"]]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_bind_points_round_trip_and_errors(rig):
    _, _, _, an = rig
    p, f, b = _surface_points(an, 100, 13)
    pb = bind_points(an.canonical_vertices, an.faces, p, f)
    torch.testing.assert_close(pb.bary, b, atol=1e-10, rtol=0)
    assert float(pb.height.abs().max()) < 1e-12
    with pytest.raises(ValueError, match="binding outside"):
        bind_points(an.canonical_vertices, an.faces, p, torch.full_like(f, an.faces.shape[0]))
    with pytest.raises(ValueError, match="mode"):
        an.animate(p, f, {"expr": torch.zeros(1, 100, dtype=torch.float64)}, mode="skinning")
    assert np.isfinite(pb.bary.numpy()).all()
