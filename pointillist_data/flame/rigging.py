"""Procedural rigging of a FLAME-topology head: landmarks, joints, skinning, expressions.

Used by the demo head only. Given the FLAME 2023 Open template, the iBUG-68 landmarks and the eyeball vertex sets, it derives what the CC-BY
extract lacks: FLAME's 5 joints (global, neck, jaw, eye_left, eye_right) as affine
regressors of nearby vertices, smooth skinning weights, and semantic expression
directions (mouth corners, lips, brows, eyelids, cheeks, nose). None of this is FLAME's
learned data; it is a plausible stand-in so that every stage can run without it.
"""

from __future__ import annotations

import numpy as np

from .meshops import affine_regressor, ray_cast_outer, vertex_normals

__all__ = ["MP_TO_IBUG68", "jaw_contour_embedding", "derive_joints", "derive_weights", "derive_expressions",
           "EXPRESSION_NAMES"]

# MediaPipe face-mesh index of each iBUG-68 point (the commonly used correspondence).
# Nostril points 31 and 35 (MediaPipe 75 / 305) are replaced by the neighbouring 98 / 327,
# which the FLAME 2023 MediaPipe embedding contains.
MP_TO_IBUG68 = np.array([
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 168, 197, 5, 4, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291,
    405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
])

EXPRESSION_NAMES = (
    "smile", "frown", "pucker", "upper_lip_raise", "lower_lip_depress", "brow_raise",
    "brow_furrow", "eyelids_close", "cheek_puff", "nose_wrinkle", "smile_left", "lip_press",
)


def _lmk_points(verts: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    return np.einsum("lk,lkd->ld", bary, verts[faces[face_idx]])


def jaw_contour_embedding(verts: np.ndarray, faces: np.ndarray, lmk51: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embed iBUG points 0..16 (the jaw line, subject's right to left) by ray casting.

    Rays leave a point behind the mouth and fan from the right ear down round the chin to
    the left ear, tilted forwards; the outermost hit is the contour point.

    Args:
        lmk51: ``(51, 3)`` positions of iBUG points 17..67.
    """
    corners = lmk51[[48 - 17, 54 - 17]]
    nose = lmk51[33 - 17]
    width = np.linalg.norm(corners[1] - corners[0])
    o = np.array([0.0, 0.5 * (corners[:, 1].mean() + nose[1]), corners[:, 2].mean() - 1.0 * width])
    a = np.linspace(0.0, np.pi, 17)
    dirs = np.stack([-np.cos(a), -np.sin(a) * 1.1 - 0.15, np.full_like(a, 0.55)], 1)
    fi, bc, _ = ray_cast_outer(verts, faces, np.repeat(o[None], 17, 0), dirs)
    return fi, bc


def derive_joints(verts: np.ndarray, eyes: tuple[np.ndarray, np.ndarray], neck_loop: np.ndarray,
                  lmk68: np.ndarray, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions ``(5, 3)`` and the regressor ``(5, V)`` reproducing them exactly.

    global: neck-ring centre; neck: 45 % of the way from there to the head centre;
    jaw: between the jaw-line ends (iBUG 2, 14), behind the mouth; eyes: eyeball centres.
    """
    head_centre = verts[skin].mean(0)
    root = verts[neck_loop].mean(0)
    neck = root + 0.45 * (head_centre - root)
    jaw = 0.5 * (lmk68[2] + lmk68[14])
    jaw[0] = 0.0
    jaw[2] = 0.5 * (jaw[2] + head_centre[2])
    targets = np.stack([root, neck, jaw, verts[eyes[0]].mean(0), verts[eyes[1]].mean(0)])
    reg = np.zeros((5, len(verts)))
    for j, (tgt, pool) in enumerate(zip(targets, (skin, skin, skin, eyes[0], eyes[1]), strict=True)):
        if j >= 3:
            reg[j, pool] = 1.0 / len(pool)
            continue
        cand = pool[np.argsort(np.linalg.norm(verts[pool] - tgt, axis=1))[:48]]
        reg[j] = affine_regressor(verts, tgt, cand)
    return reg @ verts, reg


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def derive_weights(verts: np.ndarray, joints: np.ndarray, eyes: tuple[np.ndarray, np.ndarray],
                   lmk68: np.ndarray) -> np.ndarray:
    """Skinning weights ``(V, 5)``: eyeballs rigid to their eye joints; the rest blends
    global (low neck), neck (head) and jaw (below a plane through the mouth that rises
    towards the ears)."""
    V = len(verts)
    w = np.zeros((V, 5))
    y = verts[:, 1]
    root_y, neck_y = joints[0, 1], joints[1, 1]
    w_root = np.clip((neck_y - y) / max(neck_y - root_y, 1e-6), 0.0, 1.0) ** 2
    mouth = lmk68[60:68].mean(0)
    h = (y - mouth[1]) + 0.6 * (verts[:, 2] - mouth[2])
    front = _sigmoid((verts[:, 2] - (joints[2, 2] - 0.01)) / 0.008)
    below_chin = _sigmoid((y - (lmk68[8, 1] - 0.02)) / 0.006)
    w_jaw = _sigmoid(-h / 0.003) * front * below_chin * (1.0 - w_root)
    w[:, 0] = w_root
    w[:, 2] = w_jaw
    w[:, 1] = 1.0 - w_root - w_jaw
    for j, ids in zip((3, 4), eyes, strict=True):
        w[ids] = 0.0
        w[ids, j] = 1.0
    return w


def derive_expressions(verts: np.ndarray, faces: np.ndarray, lmk68: np.ndarray, w_jaw: np.ndarray,
                       eyes: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Expression directions ``(V, 3, 12)`` named by :data:`EXPRESSION_NAMES`.

    Each is a displacement field with Gaussian falloff around its landmarks, at most
    about 5 mm per unit coefficient; upper-lip fields skip jaw-skinned vertices and
    lower-lip fields the others, so the mouth opening stays clean. Eyeballs never move.
    """
    V = len(verts)
    n = vertex_normals(verts, faces)
    eye_ids = np.concatenate(eyes)
    lower = w_jaw > 0.5

    def blob(centre: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(-0.5 * (np.linalg.norm(verts - centre, axis=1) / sigma) ** 2)

    width = np.linalg.norm(lmk68[54] - lmk68[48])
    s_mouth, s_brow, s_lid = 0.25 * width, 0.3 * width, 0.07 * width
    dirs = np.zeros((V, 3, len(EXPRESSION_NAMES)))

    def add(k: int, centre: np.ndarray, sigma: float, disp: np.ndarray, mask: np.ndarray | None = None) -> None:
        f = blob(centre, sigma)
        if mask is not None:
            f = f * mask
        dirs[:, :, k] += f[:, None] * disp

    ex = np.array([1.0, 0.0, 0.0])
    for side, c in ((-1, lmk68[48]), (1, lmk68[54])):
        add(0, c, s_mouth, np.array([0.002 * side, 0.004, -0.002]))              # smile
        add(1, c, s_mouth, np.array([0.0, -0.004, 0.0]))                         # frown
        add(10, c, s_mouth, np.array([0.002 * side, 0.004, -0.002]) * (side > 0))  # smile_left
    for c in lmk68[48:60]:
        add(2, c, 0.5 * s_mouth, (lmk68[51:58:6].mean(0) - c) * 0.05 + np.array([0, 0, 0.0008]))  # pucker
    add(3, lmk68[51], s_mouth, np.array([0.0, 0.004, 0.001]), ~lower)           # upper lip raise
    add(4, lmk68[57], s_mouth, np.array([0.0, -0.004, 0.001]), lower)           # lower lip depress
    add(11, lmk68[62], 0.6 * s_mouth, np.array([0.0, -0.002, -0.001]), ~lower)  # lip press
    add(11, lmk68[66], 0.6 * s_mouth, np.array([0.0, 0.002, -0.001]), lower)
    for c in lmk68[17:27]:
        add(5, c, s_brow, np.array([0.0, 0.005, 0.0]) / 5.0)                   # brow raise
    for c, side in ((lmk68[21], 1), (lmk68[22], -1)):
        add(6, c, 0.6 * s_brow, np.array([0.003 * side, -0.003, 0.0]))          # brow furrow
    for upper, lower_lid in (((37, 38), (41, 40)), ((43, 44), (47, 46))):
        for u, lo in zip(upper, lower_lid, strict=True):
            above = verts[:, 1] > 0.5 * (lmk68[u, 1] + lmk68[lo, 1])
            add(7, lmk68[u], s_lid, lmk68[lo] - lmk68[u], above)                # eyelids close
    for side in (-1, 1):
        cheek = 0.5 * (lmk68[3 if side < 0 else 13] + lmk68[48 if side < 0 else 54])
        f = blob(cheek, 0.35 * width)
        dirs[:, :, 8] += (0.004 * f)[:, None] * n                               # cheek puff
        add(9, 0.5 * (lmk68[31 if side < 0 else 35] + lmk68[39 if side < 0 else 42]), 0.2 * width,
            np.array([0.0, 0.002, 0.0]) + 0.001 * side * ex)                     # nose wrinkle
    dirs[eye_ids] = 0.0
    return dirs
