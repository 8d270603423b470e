"""Ground-truth Gaussian appearance for synthetic identities (skin, hair, eyes, teeth).

Density varies by region on purpose - hair faces carry more Gaussians than the fitting
stage's per-face maximum, the neck fewer than its minimum - so that the density
constraint has work to do. Source: this toolkit (a test fixture, not a paper method).
"""

from __future__ import annotations

import numpy as np
import torch

from ..flame.asset import FlameAsset
from ..flame.frames import face_frames
from ..flame.meshops import vertex_components
from ..gaussians import BoundGaussians
from ..render.sh import rgb_to_sh

__all__ = ["face_regions", "make_identity_gaussians", "REGION_NAMES"]

REGION_NAMES = ("skin", "hair", "neck", "eyes", "teeth", "lips", "brows")
# Gaussians per face by region, (low, high) inclusive.
_DENSITY = {"skin": (4, 7), "hair": (14, 20), "neck": (1, 3), "eyes": (2, 3), "teeth": (3, 4), "lips": (6, 9),
            "brows": (8, 12)}


def face_regions(asset: FlameAsset) -> np.ndarray:
    """Region id per face ``(F,)`` int64 indexing :data:`REGION_NAMES` (from the template)."""
    v, f = asset.v_template, asset.faces
    cen = v[f].mean(1)
    lmk = asset.landmarks["ibug68"]
    L = np.einsum("lk,lkd->ld", lmk.bary, v[f[lmk.face_idx]])
    region = np.zeros(len(f), dtype=np.int64)
    eye_y = L[36:48, 1].mean()
    head_c = v.mean(0)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
    frontal = n[:, 2] > 0.55
    hair = (cen[:, 1] > eye_y + 0.06) | ((cen[:, 1] > eye_y + 0.035) & ~frontal) | \
           ((cen[:, 2] < head_c[2] - 0.03) & (cen[:, 1] > L[8, 1] + 0.03))
    region[hair] = 1
    region[cen[:, 1] < L[8, 1] - 0.015] = 2
    mouth = L[48:60]
    near_mouth = np.linalg.norm(cen[:, None] - mouth[None], axis=-1).min(1) < 0.006
    region[near_mouth & frontal] = 5
    brow = L[17:27]
    region[(np.linalg.norm(cen[:, None] - brow[None], axis=-1).min(1) < 0.007) & (region == 0)] = 6
    comps = vertex_components(len(v), f[: asset.num_faces - (168 if asset.teeth else 0)])
    eye_verts = np.concatenate(comps[1:3]) if len(comps) >= 3 else np.zeros(0, np.int64)
    region[np.isin(f, eye_verts).all(1)] = 3
    if asset.teeth:
        region[-168:] = 4
    return region


def _colour(region: int, rng: np.random.Generator, skin: np.ndarray, hair: np.ndarray, n: int,
            local_front: np.ndarray) -> np.ndarray:
    if region in (0, 2):
        c = skin * (1 + 0.04 * rng.normal(size=(n, 1)))
    elif region == 1:
        c = hair * (1 + 0.15 * rng.normal(size=(n, 1)))
    elif region == 3:
        c = np.where(local_front[:, None], np.array([0.25, 0.15, 0.08]), np.array([0.92, 0.9, 0.88]))
    elif region == 4:
        c = np.tile([0.93, 0.91, 0.84], (n, 1))
    elif region == 5:
        c = np.tile(skin * np.array([1.05, 0.62, 0.62]), (n, 1))
    else:
        c = np.tile(hair * 1.1, (n, 1))
    return np.clip(c, 0.02, 0.98)


def make_identity_gaussians(asset: FlameAsset, seed: int, shape: np.ndarray | None = None) -> BoundGaussians:
    """Sample one identity's bound Gaussians.

    Args:
        asset: the head model (teeth expected).
        seed: identity seed (skin tone, hair colour, sample positions).
        shape: identity coefficients used to measure face sizes (template when ``None``).

    Returns:
        :class:`BoundGaussians` (SH degree 0) with local positions on (skin) or above (hair)
        their faces, thin tangent-plane discs, and per-region colours and opacities.
    """
    rng = np.random.default_rng(seed)
    v = asset.v_template + (0 if shape is None else np.einsum("vck,k->vc", asset.shapedirs[..., : len(shape)], shape))
    fr = face_frames(torch.as_tensor(v), torch.as_tensor(asset.faces))
    R, k, T = fr.R.numpy(), fr.k.numpy(), fr.T.numpy()
    tri_local = np.einsum("fji,fvj->fvi", R, v[asset.faces] - T[:, None]) / k[:, None, None]  # (F, 3, 3)
    regions = face_regions(asset)
    skin = np.array([0.80, 0.60, 0.50]) * rng.uniform(0.75, 1.1) + rng.normal(scale=0.03, size=3)
    hair = np.array([0.25, 0.17, 0.10]) * rng.uniform(0.5, 1.6)
    iris = _iris_faces(v, asset)
    xyz, ls, rot, op, col, bind = [], [], [], [], [], []
    for f in range(asset.num_faces):
        reg = int(regions[f])
        lo, hi = _DENSITY[REGION_NAMES[reg]]
        n = int(rng.integers(lo, hi + 1))
        b = rng.dirichlet(np.ones(3), size=n)
        p = b @ tri_local[f]
        spread = np.sqrt(0.5 / n)  # local units: the face is about 1 x 1
        if reg == 1:
            p[:, 1] += rng.uniform(0.0, 0.35, size=n)  # local y = face normal: a thin hair layer
            s = np.stack([np.full(n, 1.6 * spread), np.full(n, 0.25 * spread), np.full(n, 0.6 * spread)], 1)
        else:
            s = np.stack([np.full(n, spread), np.full(n, 0.2 * spread), np.full(n, spread)], 1)
        s = s * np.exp(0.15 * rng.normal(size=(n, 3)))
        front = np.full(n, bool(iris[f]))
        xyz.append(p)
        ls.append(np.log(s))
        rot.append(np.tile([1.0, 0, 0, 0], (n, 1)) + 0.05 * rng.normal(size=(n, 4)))
        op.append(np.full(n, 1.2 if reg == 1 else 4.0))
        col.append(_colour(reg, rng, skin, hair, n, front))
        bind.append(np.full(n, f))
    rgb = np.concatenate(col)
    return BoundGaussians(
        np.concatenate(xyz).astype(np.float32), np.concatenate(ls).astype(np.float32),
        np.concatenate(rot).astype(np.float32), np.concatenate(op).astype(np.float32),
        rgb_to_sh(torch.as_tensor(rgb)).numpy().astype(np.float32)[:, None, :], np.concatenate(bind).astype(np.int64),
    )


def _iris_faces(v: np.ndarray, asset: FlameAsset) -> np.ndarray:
    """Faces ``(F,)`` bool on the iris cap (front 25 % of either eyeball)."""
    out = np.zeros(asset.num_faces, dtype=bool)
    comps = vertex_components(len(v), asset.faces[: asset.num_faces - (168 if asset.teeth else 0)])
    cen = v[asset.faces].mean(1)
    for comp in comps[1:3]:
        c = v[comp].mean(0)
        r = np.linalg.norm(v[comp] - c, axis=1).mean()
        on = np.isin(asset.faces, comp).all(1)
        out |= on & (cen[:, 2] - c[2] > 0.75 * r)
    return out
