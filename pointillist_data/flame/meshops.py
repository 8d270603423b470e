"""Small NumPy mesh operations used to build and rig head meshes (CPU, float64)."""

from __future__ import annotations

import numpy as np
import trimesh

__all__ = ["boundary_loops", "vertex_components", "ray_cast_outer", "affine_regressor", "vertex_normals"]


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Ordered boundary loops ``[(n_i,) int64]`` of a triangle mesh ``faces (F, 3)``."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inv.ravel()] == 1]
    nxt = {int(a): int(b) for a, b in boundary}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt.get(v, start)
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def vertex_components(num_vertices: int, faces: np.ndarray) -> list[np.ndarray]:
    """Connected components (sorted vertex id arrays ``(n_i,)`` int64), largest first.

    Uses trimesh's graph components over the face edges; isolated vertices form their own
    components.
    """
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    comps = trimesh.graph.connected_components(edges, nodes=np.arange(num_vertices), min_len=1, engine="scipy")
    return sorted((np.sort(np.asarray(c, dtype=np.int64)) for c in comps), key=len, reverse=True)


def ray_cast_outer(
    verts: np.ndarray, faces: np.ndarray, origins: np.ndarray, dirs: np.ndarray, eps: float = 1e-12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersect rays with a mesh and keep the farthest hit (the outer surface).

    Möller-Trumbore, vectorised over all faces.

    Args:
        verts: ``(V, 3)``; faces: ``(F, 3)``; origins, dirs: ``(R, 3)``.

    Returns:
        ``(face_idx (R,), bary (R, 3), points (R, 3))``.

    Raises:
        ValueError: a ray misses the mesh.
    """
    tri = verts[faces]
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    fi_out, bc_out, pts = [], [], []
    for o, d in zip(origins, dirs / np.linalg.norm(dirs, axis=1, keepdims=True), strict=True):
        p = np.cross(d, e2)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > eps
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = o - v0
        u = (s * p).sum(1) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = (q * e2).sum(1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if not hit.any():
            raise ValueError(f"ray from {o} along {d} misses the mesh")
        f = int(np.flatnonzero(hit)[np.argmax(t[hit])])
        fi_out.append(f)
        bc_out.append([1 - u[f] - v[f], u[f], v[f]])
        pts.append(o + t[f] * d)
    return np.asarray(fi_out, dtype=np.int64), np.asarray(bc_out), np.asarray(pts)


def affine_regressor(verts: np.ndarray, target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Minimum-norm weights ``w`` over ``candidates`` with ``sum w = 1`` and ``w @ verts = target``.

    Used for joint regressors: the joint then follows the shape of the vertices around it.
    Returns a dense ``(V,)`` row.
    """
    A = np.concatenate([verts[candidates].T, np.ones((1, len(candidates)))])  # (4, K)
    b = np.concatenate([target, [1.0]])
    w = A.T @ np.linalg.solve(A @ A.T, b)
    row = np.zeros(len(verts))
    row[candidates] = w
    return row


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)``."""
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    n = np.zeros_like(verts)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
