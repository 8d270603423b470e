"""Face frames and the local<->global transforms of bound Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointillist_data.flame import face_frames, global_to_local, local_to_global
from pointillist_data.quaternion import matrix_to_quat, quat_conjugate, quat_multiply, quat_to_matrix


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frame_definition_and_round_trip(dtype, demo_asset):
    g = torch.Generator().manual_seed(0)
    verts = torch.as_tensor(demo_asset.v_template, dtype=dtype)[None].repeat(2, 1, 1)
    verts[1] += 0.002 * torch.randn(verts[1].shape, generator=g, dtype=dtype)
    faces = torch.as_tensor(demo_asset.faces)
    fr = face_frames(verts, faces)
    # the definition, written out for a few faces in NumPy
    v = verts.double().numpy()
    for b, f in [(0, 0), (1, 77), (1, demo_asset.num_faces - 1)]:
        v0, v1, v2 = v[b, demo_asset.faces[f]]
        a0 = (v1 - v0) / np.linalg.norm(v1 - v0)
        a1 = np.cross(a0, v2 - v0)
        a1 /= np.linalg.norm(a1)
        a2 = -np.cross(a1, a0) / np.linalg.norm(np.cross(a1, a0))
        R = np.stack([a0, a1, a2], 1)
        k = (np.linalg.norm(v1 - v0) + abs(a2 @ (v2 - v0))) / 2
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(fr.R[b, f].double().numpy(), R, atol=tol)
        np.testing.assert_allclose(float(fr.k[b, f]), k, rtol=tol)
        np.testing.assert_allclose(fr.T[b, f].double().numpy(), (v0 + v1 + v2) / 3, atol=tol)
    assert torch.allclose(torch.linalg.det(fr.R.double()), torch.ones((), dtype=torch.float64), atol=1e-5)
    torch.testing.assert_close(quat_to_matrix(fr.q), fr.R, atol=1e-5, rtol=0)

    N = 500
    binding = torch.randint(0, faces.shape[0], (N,), generator=g)
    mu = torch.randn(2, N, 3, generator=g, dtype=dtype) * 0.5
    ls = torch.randn(2, N, 3, generator=g, dtype=dtype) * 0.3 - 1
    q = torch.randn(2, N, 4, generator=g, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    gm, gs, gq = local_to_global(fr, binding, mu, ls, q)
    # mu' = k R mu + T, written directly
    ref = fr.k[:, binding, None] * torch.einsum("bnij,bnj->bni", fr.R[:, binding], mu) + fr.T[:, binding]
    torch.testing.assert_close(gm, ref)
    torch.testing.assert_close(gs, fr.k[:, binding, None] * ls.exp())
    torch.testing.assert_close(quat_to_matrix(gq), fr.R[:, binding] @ quat_to_matrix(q), atol=1e-5, rtol=0)
    lm, lls, lq = global_to_local(fr, binding, gm, gs, gq)
    tol = 2e-5 if dtype == torch.float32 else 1e-6
    torch.testing.assert_close(lm, mu, atol=tol, rtol=0)
    torch.testing.assert_close(lls, ls, atol=tol, rtol=0)
    sign = torch.sign((lq * q).sum(-1, keepdim=True))
    torch.testing.assert_close(lq * sign, q, atol=tol, rtol=0)
    # global -> local -> global
    gm2, gs2, gq2 = local_to_global(fr, binding, lm, lls, lq)
    torch.testing.assert_close(gm2, gm, atol=1e-6, rtol=0)


def test_frames_differentiable(demo_asset):
    verts = torch.as_tensor(demo_asset.v_template, dtype=torch.float64).requires_grad_(True)
    fr = face_frames(verts, torch.as_tensor(demo_asset.faces))
    binding = torch.arange(0, demo_asset.num_faces, 7)
    mu, sc, q = local_to_global(fr, binding, torch.ones(len(binding), 3, dtype=torch.float64),
                                torch.zeros(len(binding), 3, dtype=torch.float64),
                                torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(len(binding), 4))
    (mu.sum() + sc.sum() + q.sum()).backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


def _rodrigues(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    # R = I + sin(a) [n]x + (1 - cos(a)) [n]x^2 for unit axes n (N, 3), angles a (N,)
    K = np.zeros((len(axis), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    K = K - K.transpose(0, 2, 1)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * K + (1 - c) * K @ K


def _as_su2(q: np.ndarray) -> np.ndarray:
    # w + xi + yj + zk as the complex 2x2 matrix [[w + xi, y + zi], [-y + zi, w - xi]]: the
    # Hamilton product is the matrix product (an algebra independent of the code under test)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([np.stack([w + 1j * x, y + 1j * z], -1), np.stack([-y + 1j * z, w - 1j * x], -1)], -2)


def test_quaternions_against_axis_angle_and_su2():
    g = np.random.default_rng(5)
    axis = g.normal(size=(500, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = g.uniform(-np.pi, np.pi, 500)
    # the unit quaternion of a rotation by `angle` about `axis`, wxyz
    q = np.concatenate([np.cos(angle / 2)[:, None], np.sin(angle / 2)[:, None] * axis], 1)
    R = _rodrigues(axis, angle)
    np.testing.assert_allclose(quat_to_matrix(torch.as_tensor(q)).numpy(), R, atol=1e-12)
    back = matrix_to_quat(torch.as_tensor(R)).numpy()
    np.testing.assert_allclose(back, q * np.sign(q[:, :1]), atol=1e-10)
    # unnormalised input is normalised first
    np.testing.assert_allclose(quat_to_matrix(torch.as_tensor(3.0 * q)).numpy(), R, atol=1e-12)
    # a quarter turn about +z takes +x to +y (right-handed, active rotation)
    qz = torch.tensor([np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)], dtype=torch.float64)
    np.testing.assert_allclose((quat_to_matrix(qz) @ torch.tensor([1.0, 0, 0], dtype=torch.float64)).numpy(),
                               [0, 1, 0], atol=1e-15)
    # Hamilton product and conjugate against SU(2) matrices
    a, b = g.normal(size=(2, 500, 4))
    ab = quat_multiply(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    np.testing.assert_allclose(_as_su2(ab), _as_su2(a) @ _as_su2(b), atol=1e-12)
    conj = quat_conjugate(torch.as_tensor(a)).numpy()
    np.testing.assert_allclose(_as_su2(conj), np.conj(np.swapaxes(_as_su2(a), -1, -2)), atol=1e-15)


def test_quaternion_helpers_match_matrices():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1000, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    R = quat_to_matrix(q)
    q2 = matrix_to_quat(R)
    assert (q2[:, 0] >= 0).all()
    torch.testing.assert_close(q2, q * torch.sign(q[:, :1]), atol=1e-10, rtol=0)
    torch.testing.assert_close(quat_to_matrix(q2), R, atol=1e-10, rtol=0)
    p = torch.randn(1000, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(quat_to_matrix(quat_multiply(p, q)), quat_to_matrix(p) @ R, atol=1e-10, rtol=0)
    # 180 degree rotations are stable
    R180 = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(quat_to_matrix(matrix_to_quat(R180)), R180, atol=1e-12, rtol=0)
