"""A procedural head mesh for when no FLAME template is available (demo and tests only).

The head is a latitude-longitude surface: polar angle ``theta`` (in units of pi, 0 at the
crown) and azimuth ``phi`` (radians, 0 facing +z, positive towards +x, the subject's
left). An ellipsoid cranium carries a nose, brow ridge, eye sockets, cheeks, chin, ears
and lips; below it a neck tube ends in an open ring (as FLAME's neck does). One row of
faces between the lips is left out, giving a mouth opening for the teeth. Two eyeball
spheres sit in the sockets. Metres, y up, face towards +z, like FLAME.
"""

from __future__ import annotations

import numpy as np
import trimesh

__all__ = ["ProceduralHead", "build_procedural_head", "IBUG51_PARAM"]

N_COLS = 64
N_HEAD_ROWS = 40
N_NECK_ROWS = 8
THETA_TOP, THETA_MAX = 0.03, 0.80
CENTRE = np.array([0.0, 0.0, -0.01])
RADII = np.array([0.078, 0.105, 0.095])
THETA_MOUTH = 0.615
MOUTH_HALF_WIDTH = 0.30  # radians of azimuth
EYE_THETA, EYE_PHI, EYE_RADIUS = 0.425, 0.36, 0.0125


def _ibug51() -> np.ndarray:
    """(theta, phi) of iBUG points 17..67 on the procedural head."""
    p: list[tuple[float, float]] = []
    brow_t = [0.355, 0.335, 0.33, 0.335, 0.345]
    brow_p = [-0.62, -0.50, -0.38, -0.26, -0.14]
    p += list(zip(brow_t, brow_p, strict=True))
    p += [(t, -f) for t, f in zip(brow_t[::-1], brow_p[::-1], strict=True)]
    p += [(0.40, 0.0), (0.44, 0.0), (0.48, 0.0), (0.52, 0.0)]
    p += [(0.555, f) for f in (-0.14, -0.07, 0.0, 0.07, 0.14)]
    te, fe = EYE_THETA, -EYE_PHI
    right = [(te, fe - 0.10), (te - 0.022, fe - 0.04), (te - 0.022, fe + 0.04), (te, fe + 0.10),
             (te + 0.02, fe + 0.04), (te + 0.02, fe - 0.04)]
    left = [(te, EYE_PHI - 0.10), (te - 0.022, EYE_PHI - 0.04), (te - 0.022, EYE_PHI + 0.04), (te, EYE_PHI + 0.10),
            (te + 0.02, EYE_PHI + 0.04), (te + 0.02, EYE_PHI - 0.04)]
    p += right + left
    m = THETA_MOUTH
    p += [(m, -0.32), (m - 0.022, -0.20), (m - 0.03, -0.09), (m - 0.027, 0.0), (m - 0.03, 0.09), (m - 0.022, 0.20),
          (m, 0.32), (m + 0.025, 0.20), (m + 0.035, 0.09), (m + 0.038, 0.0), (m + 0.035, -0.09), (m + 0.025, -0.20)]
    p += [(m, -0.27), (m - 0.006, -0.1), (m - 0.006, 0.0), (m - 0.006, 0.1), (m, 0.27), (m + 0.006, 0.1),
          (m + 0.006, 0.0), (m + 0.006, -0.1)]
    return np.asarray(p)


IBUG51_PARAM = _ibug51()


def _bump(t: np.ndarray, f: np.ndarray, t0: float, f0: float, st: float, sf: float) -> np.ndarray:
    return np.exp(-0.5 * (((t - t0) / st) ** 2 + ((f - f0) / sf) ** 2))


def _relief(t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Radial displacement (metres) of the face features at (theta in pi units, phi)."""
    r = 0.024 * _bump(t, f, 0.50, 0.0, 0.055, 0.075)            # nose
    r += 0.008 * _bump(t, f, 0.555, 0.0, 0.02, 0.16)            # nostril wings
    for s in (-1, 1):
        r -= 0.014 * _bump(t, f, EYE_THETA, s * EYE_PHI, 0.035, 0.11)  # eye sockets
        r += 0.006 * _bump(t, f, 0.345, s * 0.38, 0.02, 0.2)     # brow ridge
        r += 0.006 * _bump(t, f, 0.53, s * 0.55, 0.06, 0.2)      # cheeks
        r += 0.012 * _bump(t, f, 0.48, s * np.pi / 2, 0.05, 0.1)  # ears
    r += 0.007 * _bump(t, f, THETA_MOUTH, 0.0, 0.03, 0.22)       # lips
    r += 0.010 * _bump(t, f, 0.71, 0.0, 0.04, 0.25)             # chin
    r += 0.008 * _bump(t, f, 0.66, 0.0, 0.08, 0.9)              # jaw
    return r


def _surface(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    th = np.pi * theta
    base = np.stack([RADII[0] * np.sin(th) * np.sin(phi), RADII[1] * np.cos(th), RADII[2] * np.sin(th) * np.cos(phi)], -1)
    n = base / (RADII**2)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return CENTRE + base + _relief(theta, phi)[..., None] * n


def param_to_point(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Surface point(s) ``(..., 3)`` of the cranium at ``(theta [pi units], phi [rad])``."""
    return _surface(np.asarray(theta, float), np.asarray(phi, float))


class ProceduralHead:
    """Vertices ``(V, 3)``, faces ``(F, 3)``, the eyeball vertex ids and the grid layout."""

    def __init__(self, verts: np.ndarray, faces: np.ndarray, eyes: tuple[np.ndarray, np.ndarray]) -> None:
        self.verts, self.faces, self.eyes = verts, faces, eyes


def build_procedural_head() -> ProceduralHead:
    """Build the deterministic procedural head (about 3.3k vertices, 6.6k faces)."""
    thetas = np.linspace(THETA_TOP, THETA_MAX, N_HEAD_ROWS)
    # Put the lip rows symmetrically around the mouth line.
    i_m = int(np.argmin(np.abs(thetas - THETA_MOUTH)))
    thetas += THETA_MOUTH - 0.5 * (thetas[i_m] + thetas[i_m + 1]) if thetas[i_m] < THETA_MOUTH else 0.0
    if thetas[i_m] >= THETA_MOUTH:
        i_m -= 1
        thetas += THETA_MOUTH - 0.5 * (thetas[i_m] + thetas[i_m + 1])
    phis = np.linspace(-np.pi, np.pi, N_COLS, endpoint=False) + np.pi / N_COLS
    T, P = np.meshgrid(thetas, phis, indexing="ij")
    head = _surface(T, P)
    # Close the lips to a narrow slit (a quarter of a row apart).
    mouth_cols = np.abs(phis) < MOUTH_HALF_WIDTH
    gap = head[i_m + 1, mouth_cols] - head[i_m, mouth_cols]
    head[i_m, mouth_cols] += 0.35 * gap
    head[i_m + 1, mouth_cols] -= 0.35 * gap
    last = head[-1]
    neck_c = np.array([0.0, 0.0, -0.025])
    neck = []
    for k in range(1, N_NECK_ROWS + 1):
        s = k / N_NECK_ROWS
        ring = np.stack([0.050 * np.sin(phis), np.zeros_like(phis), 0.055 * np.cos(phis)], -1) + neck_c
        ring[:, 1] = last[:, 1].mean() - 0.10 * s
        mix = min(1.0, 2.0 * s)
        neck.append((1 - mix) * last + mix * ring if k < N_NECK_ROWS else ring)
    grid = np.concatenate([head, np.stack(neck)])  # (R, C, 3)
    R, C = grid.shape[:2]
    top = np.array([[0.0, CENTRE[1] + RADII[1], CENTRE[2]]])
    verts = np.concatenate([top, grid.reshape(-1, 3)])
    vid = lambda r, c: 1 + r * C + (c % C)  # noqa: E731
    faces = [[0, vid(0, c + 1), vid(0, c)] for c in range(C)]
    for r in range(R - 1):
        for c in range(C):
            if r == i_m and mouth_cols[c] and mouth_cols[(c + 1) % C]:
                continue
            a, b, d, e = vid(r, c), vid(r, c + 1), vid(r + 1, c), vid(r + 1, c + 1)
            faces += [[a, b, d], [b, e, d]]
    faces = np.asarray(faces, dtype=np.int64)
    # Outward winding: the crown fan must point up.
    n0 = np.cross(verts[faces[0, 1]] - verts[faces[0, 0]], verts[faces[0, 2]] - verts[faces[0, 0]])
    if n0[1] < 0:
        faces = faces[:, ::-1].copy()
    eyes = []
    for s in (1, -1):  # left eye (+x) first, as FLAME's joint order eye_left, eye_right
        c = param_to_point(EYE_THETA, s * EYE_PHI)
        c = c - np.array([0.0, 0.0, 0.6 * EYE_RADIUS])
        sph = trimesh.creation.icosphere(subdivisions=2, radius=EYE_RADIUS)
        off = len(verts)
        verts = np.concatenate([verts, np.asarray(sph.vertices) + c])
        faces = np.concatenate([faces, np.asarray(sph.faces, dtype=np.int64) + off])
        eyes.append(np.arange(off, off + len(sph.vertices)))
    return ProceduralHead(verts, faces, (eyes[0], eyes[1]))


def procedural_identity_dirs(verts: np.ndarray, normals: np.ndarray, n_dirs: int, seed: int) -> np.ndarray:
    """``(V, 3, n_dirs)`` smooth, orthogonal identity directions ordered by decreasing size.

    Three global anisotropic scalings, then random low-frequency normal displacements.
    Direction ``k`` has an RMS displacement of ``4 mm * 0.88**k`` per unit coefficient.
    """
    rng = np.random.default_rng(seed)
    rel = verts - verts.mean(0)
    cols = [rel * np.eye(3)[a] for a in range(3)]
    while len(cols) < n_dirs:
        field = np.zeros(len(verts))
        for _ in range(4):
            w = rng.normal(size=3)
            w *= rng.uniform(8.0, 30.0) / np.linalg.norm(w)
            field += rng.normal() * np.sin(rel @ w + rng.uniform(0, 2 * np.pi))
        cols.append(field[:, None] * normals)
    basis = np.stack([c.reshape(-1) for c in cols[:n_dirs]], 1)
    q, _ = np.linalg.qr(basis)
    rms = 0.004 * 0.88 ** np.arange(n_dirs)
    q = q / np.sqrt((q**2).reshape(len(verts), 3, -1).sum(1).mean(0)) * rms
    return q.reshape(len(verts), 3, n_dirs)
