"""Ground-truth Gaussian appearance for synthetic identities (skin, hair, eyes, teeth).

Density varies by region on purpose - hair faces carry more Gaussians than the fitting
stage's per-face maximum, the neck fewer than its minimum - so that the density
constraint has work to do. An :class:`IdentityStyle` varies what the paper's claims about
adaptive point count rest on (Pointillist section 3: more hair, more points): hair kind
(bald / short / medium / long: extent, hairline, thickness and density of the hair layer),
head shape gain, skin tone and hair colour; no glasses. Source: this toolkit (a test
fixture, not a paper method).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..flame.asset import FlameAsset
from ..flame.frames import face_frames
from ..flame.meshops import vertex_components
from ..gaussians import BoundGaussians
from ..render.sh import rgb_to_sh

__all__ = ["face_regions", "make_identity_gaussians", "REGION_NAMES", "IdentityStyle", "identity_style",
           "styled_regions", "HAIR_KINDS"]

REGION_NAMES = ("skin", "hair", "neck", "eyes", "teeth", "lips", "brows")
# Gaussians per face by region, (low, high) inclusive.
_DENSITY = {"skin": (4, 7), "hair": (14, 20), "neck": (1, 3), "eyes": (2, 3), "teeth": (3, 4), "lips": (6, 9),
            "brows": (8, 12)}


# Hair kinds in the order identities 1, 2, 3, 4, ... take them (identity 0 keeps the
# original appearance), so that any four consecutive identities span bald to long.
HAIR_KINDS = ("bald", "long", "short", "medium")
# Hair layer per kind: Gaussians per face (low, high), thickness along the face normal (local
# units, the face is about 1 x 1), hairline raised by metres above the original one.
_HAIR = {"short": ((9, 12), 0.12, (0.0, 0.02)), "medium": ((14, 20), 0.35, (0.0, 0.01)),
         "long": ((24, 32), 0.9, (0.0, 0.0))}
_HAIR_COLOURS = np.array([[0.05, 0.04, 0.04], [0.25, 0.17, 0.10], [0.55, 0.42, 0.25], [0.62, 0.58, 0.52],
                          [0.45, 0.18, 0.08], [0.80, 0.70, 0.45]])  # black, brown, dark blond, grey, red, blond


@dataclass(frozen=True)
class IdentityStyle:
    """How one synthetic identity looks beyond its FLAME shape (recorded in ``capture.json``).

    Attributes:
        hair: one of :data:`HAIR_KINDS`: ``bald`` (no hair layer: scalp faces are skin),
            ``short`` (thin, sparse, receding), ``medium`` (as the original identity) or
            ``long`` (a thick, dense layer that also covers the nape).
        hairline: metres the front hairline sits above the original one (>= 0).
        shape_gain: factor on the first three identity coefficients (overall head size and
            proportions; 1 keeps the drawn shape).
        skin: linear RGB ``(3,)`` in (0, 1) of the skin.
        hair_rgb: linear RGB ``(3,)`` in (0, 1) of hair and brows.
    """

    hair: str
    hairline: float
    shape_gain: float
    skin: tuple[float, float, float]
    hair_rgb: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.hair not in HAIR_KINDS:
            raise ValueError(f"hair: must be one of {', '.join(HAIR_KINDS)}, got {self.hair!r}")
        if self.hairline < 0 or self.shape_gain <= 0:
            raise ValueError(f"hairline must be >= 0 and shape_gain > 0, got {self.hairline}, {self.shape_gain}")


def identity_style(index: int, seed: int) -> IdentityStyle | None:
    """The style of identity ``index`` of a capture with master ``seed``: ``None`` (the original
    appearance, so the demo identity never changes) for index 0, else hair kind
    ``HAIR_KINDS[(index - 1) % 4]`` with hairline, head-shape gain and colours drawn from
    ``default_rng([seed, index, 31])`` (deterministic, independent of the other draws)."""
    if index == 0:
        return None
    rng = np.random.default_rng([seed, index, 31])
    kind = HAIR_KINDS[(index - 1) % len(HAIR_KINDS)]
    lo, hi = _HAIR.get(kind, ((0, 0), 0.0, (0.0, 0.0)))[2]
    tone = rng.uniform(0.0, 1.0)  # dark to light skin
    skin = (1 - tone) * np.array([0.36, 0.22, 0.15]) + tone * np.array([0.93, 0.76, 0.66])
    skin = np.clip(skin * rng.uniform(0.95, 1.05, size=3), 0.02, 0.98)
    hair = np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.85, 1.15), 0.02, 0.98)
    return IdentityStyle(kind, float(rng.uniform(lo, hi)), float(rng.uniform(0.6, 1.5)),
                         tuple(float(c) for c in skin), tuple(float(c) for c in hair))


def _template_landmarks(asset: FlameAsset) -> np.ndarray:
    v, f = asset.v_template, asset.faces
    lmk = asset.landmarks["ibug68"]
    return np.einsum("lk,lkd->ld", lmk.bary, v[f[lmk.face_idx]])


def styled_regions(asset: FlameAsset, style: IdentityStyle | None) -> np.ndarray:
    """Region id per face ``(F,)`` int64 (:data:`REGION_NAMES`) for ``style``: the template's
    :func:`face_regions` with the hair region moved: none when bald, the front hairline raised
    by ``style.hairline``, and for long hair also the back of the neck (the nape) down to 6 cm
    below the chin. ``None`` gives :func:`face_regions` unchanged."""
    region = face_regions(asset)
    if style is None:
        return region
    v, f = asset.v_template, asset.faces
    cen = v[f].mean(1)
    L = _template_landmarks(asset)
    hair = region == 1
    if style.hair == "bald":
        hair[:] = False
    else:
        if style.hairline > 0:  # a receding front hairline: the forehead grows
            hair &= ~((cen[:, 1] < L[36:48, 1].mean() + 0.06 + style.hairline) & (cen[:, 2] > v[:, 2].mean()))
        if style.hair == "long":
            hair |= np.isin(region, (0, 2)) & (cen[:, 2] < v[:, 2].mean() - 0.02) & (cen[:, 1] > L[8, 1] - 0.06)
    region[(region == 1) & ~hair] = 0
    region[hair] = 1
    return region


def face_regions(asset: FlameAsset) -> np.ndarray:
    """Region id per face ``(F,)`` int64 indexing :data:`REGION_NAMES` (from the template)."""
    v, f = asset.v_template, asset.faces
    cen = v[f].mean(1)
    L = _template_landmarks(asset)
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


def make_identity_gaussians(asset: FlameAsset, seed: int, shape: np.ndarray | None = None,
                            style: IdentityStyle | None = None) -> BoundGaussians:
    """Sample one identity's bound Gaussians.

    Args:
        asset: the head model (teeth expected).
        seed: identity seed (skin tone, hair colour, sample positions).
        shape: identity coefficients used to measure face sizes (template when ``None``).
        style: hair kind, hairline and colours (:func:`identity_style`); ``None`` draws the
            original appearance (the same Gaussians as before styles existed).

    Returns:
        :class:`BoundGaussians` (SH degree 0) with local positions on (skin) or above (hair)
        their faces, thin tangent-plane discs, and per-region colours and opacities.
    """
    rng = np.random.default_rng(seed)
    v = asset.v_template + (0 if shape is None else np.einsum("vck,k->vc", asset.shapedirs[..., : len(shape)], shape))
    fr = face_frames(torch.as_tensor(v), torch.as_tensor(asset.faces))
    R, k, T = fr.R.numpy(), fr.k.numpy(), fr.T.numpy()
    tri_local = np.einsum("fji,fvj->fvi", R, v[asset.faces] - T[:, None]) / k[:, None, None]  # (F, 3, 3)
    regions = styled_regions(asset, style)
    skin = np.array([0.80, 0.60, 0.50]) * rng.uniform(0.75, 1.1) + rng.normal(scale=0.03, size=3)
    hair = np.array([0.25, 0.17, 0.10]) * rng.uniform(0.5, 1.6)
    density, thickness = dict(_DENSITY), 0.35
    if style is not None:
        skin, hair = np.array(style.skin), np.array(style.hair_rgb)
        if style.hair in _HAIR:
            density["hair"], thickness = _HAIR[style.hair][:2]
    iris = _iris_faces(v, asset)
    xyz, ls, rot, op, col, bind = [], [], [], [], [], []
    for f in range(asset.num_faces):
        reg = int(regions[f])
        lo, hi = density[REGION_NAMES[reg]]
        n = int(rng.integers(lo, hi + 1))
        b = rng.dirichlet(np.ones(3), size=n)
        p = b @ tri_local[f]
        spread = np.sqrt(0.5 / n)  # local units: the face is about 1 x 1
        if reg == 1:
            p[:, 1] += rng.uniform(0.0, thickness, size=n)  # local y = face normal: the hair layer
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
