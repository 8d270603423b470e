"""Face frames and the local<->global transforms of bound Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointillist_data.flame import face_frames, global_to_local, local_to_global
from pointillist_data.quaternion import matrix_to_quat, quat_multiply, quat_to_matrix


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
