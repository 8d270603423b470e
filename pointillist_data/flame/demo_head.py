"""The built-in demo head: a complete FLAME-format asset built deterministically from a seed.

Real FLAME files are licence-gated, so the toolkit ships a stand-in that runs anywhere.
With the CC-BY FLAME 2023 Open extract (``flame2023_open_basis.npz``: template, faces,
60 identity directions, MediaPipe embedding) it builds on the real topology; without it,
on :mod:`.procedural`'s head. Joints, skinning weights and expression directions are
derived procedurally (:mod:`.rigging`), pose correctives are zero, and the teeth are
added either way. The asset is cached on disk and read back through
:func:`load_flame_asset`, the same loader as real FLAME files.

**The demo head serves demos and tests. It is no substitute for FLAME in research.**

Model selection (:func:`resolve_flame_asset`): an explicit path, else the environment
variable ``POINTILLIST_FLAME_MODEL`` (a real FLAME ``.pkl``/``.npz``), else the demo head
built on ``POINTILLIST_FLAME_BASIS`` or the first ``shared/flame/flame2023_open_basis.npz``
found beside or above the working directory / package, else the procedural head.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .asset import FlameAsset, FlameFileError, LandmarkEmbedding, load_flame_asset, save_flame_asset
from .meshops import boundary_loops, ray_cast_outer, vertex_components, vertex_normals
from .procedural import IBUG51_PARAM, build_procedural_head, param_to_point, procedural_identity_dirs
from .rigging import MP_TO_IBUG68, derive_expressions, derive_joints, derive_weights, jaw_contour_embedding
from .teeth import add_teeth

__all__ = ["build_demo_asset", "demo_asset_path", "find_flame_basis", "resolve_flame_asset", "LICENCE_NOTE",
           "BUILDER_VERSION"]

BUILDER_VERSION = 3
LICENCE_NOTE = (
    "Demo head: for demos and tests only, no substitute for FLAME in research. "
    "Topology and identity basis (when present) from FLAME 2023 Open, CC-BY-4.0, "
    "(c) Max Planck Institute for Intelligent Systems; rigging and expressions are procedural."
)
BASIS_NAME = "flame2023_open_basis.npz"


def find_flame_basis() -> Path | None:
    """The FLAME 2023 Open extract: ``$POINTILLIST_FLAME_BASIS``, else ``shared/flame/`` found
    beside or above the current directory or this package (a checkout's ``../shared``)."""
    env = os.environ.get("POINTILLIST_FLAME_BASIS")
    if env:
        return Path(env) if Path(env).exists() else None
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for d in [start, *start.parents]:
            for cand in (d / "shared" / "flame" / BASIS_NAME, d.parent / "shared" / "flame" / BASIS_NAME):
                if cand.exists():
                    return cand
    return None


def _embed_params(verts: np.ndarray, faces: np.ndarray, params: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = param_to_point(params[:, 0], params[:, 1])
    fi, bc, _ = ray_cast_outer(verts, faces, np.repeat(origin[None], len(pts), 0), pts - origin)
    return fi, bc


def _lmk(verts: np.ndarray, faces: np.ndarray, emb: LandmarkEmbedding) -> np.ndarray:
    return np.einsum("lk,lkd->ld", emb.bary, verts[faces[emb.face_idx]])


def build_demo_asset(seed: int = 0, basis_path: str | Path | None = None, n_expr: int = 12,
                     n_shape_procedural: int = 24) -> FlameAsset:
    """Build the demo head asset (with teeth) in memory.

    Args:
        seed: seeds the procedural identity directions (the FLAME-based head uses the
            extract's 60 real directions and is the same for every seed).
        basis_path: the FLAME 2023 Open extract, or ``None`` for the procedural head.
        n_expr: number of expression directions (at most 12 semantic ones).
        n_shape_procedural: identity directions of the procedural head (>= 20).

    Raises:
        FlameFileError: the basis file is unreadable or lacks a key.
    """
    if basis_path is not None:
        basis_path = Path(basis_path)
        try:
            with np.load(basis_path) as z:
                b = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise FlameFileError(basis_path, None, f"unreadable ({e})") from e
        for key in ("v_template", "faces", "shapedirs", "lmk_face_idx", "lmk_b_coords", "landmark_indices"):
            if key not in b:
                raise FlameFileError(basis_path, key, "missing key in FLAME basis extract")
        verts = b["v_template"].astype(np.float64)
        faces = b["faces"].astype(np.int64)
        shapedirs = b["shapedirs"].astype(np.float64)
        mp = LandmarkEmbedding(b["lmk_face_idx"].astype(np.int64), b["lmk_b_coords"].astype(np.float64),
                               b["landmark_indices"].astype(np.int64))
        comps = vertex_components(len(verts), faces)
        eyes = sorted(comps[1:3], key=lambda c: -verts[c, 0].mean())  # eye_left (+x) first
        pos = {int(m): i for i, m in enumerate(mp.indices)}
        ids = [pos[int(m)] for m in MP_TO_IBUG68[17:]]
        fi51, bc51 = mp.face_idx[ids], mp.bary[ids]
        source = f"FLAME 2023 Open extract ({basis_path.name})"
    else:
        head = build_procedural_head()
        verts, faces, eyes = head.verts, head.faces, list(head.eyes)
        skin_centre = np.array([0.0, 0.0, -0.02])
        fi51, bc51 = _embed_params(verts, faces, IBUG51_PARAM, skin_centre)
        shapedirs = procedural_identity_dirs(verts, vertex_normals(verts, faces), n_shape_procedural, seed)
        for e in eyes:  # eyeballs move rigidly with the skin around them
            near = np.argsort(np.linalg.norm(verts[: eyes[0][0]] - verts[e].mean(0), axis=1))[:30]
            shapedirs[e] = shapedirs[near].mean(0, keepdims=True)
        mp = None
        source = "procedural head"
    lmk51 = np.einsum("lk,lkd->ld", bc51, verts[faces[fi51]])
    fi_jaw, bc_jaw = jaw_contour_embedding(verts, faces, lmk51)
    ibug = LandmarkEmbedding(np.concatenate([fi_jaw, fi51]), np.concatenate([bc_jaw, bc51]), np.arange(68))
    if mp is None:
        mp_idx, first = np.unique(MP_TO_IBUG68, return_index=True)
        mp = LandmarkEmbedding(ibug.face_idx[first], ibug.bary[first], mp_idx)
    lmk68 = _lmk(verts, faces, ibug)
    eye_ids = np.concatenate(eyes)
    skin = np.setdiff1d(np.arange(len(verts)), eye_ids)
    neck_loop = min(boundary_loops(faces), key=lambda lp: verts[lp, 1].mean())
    joints, J_reg = derive_joints(verts, (eyes[0], eyes[1]), neck_loop, lmk68, skin)
    weights = derive_weights(verts, joints, (eyes[0], eyes[1]), lmk68)
    exprdirs = derive_expressions(verts, faces, lmk68, weights[:, 2], (eyes[0], eyes[1]))[..., :n_expr]
    V = len(verts)
    asset = FlameAsset(
        v_template=verts, faces=faces, shapedirs=shapedirs, exprdirs=exprdirs,
        posedirs=np.zeros((36, V * 3)), J_regressor=J_reg, parents=np.array([-1, 0, 1, 1, 1]),
        lbs_weights=weights, landmarks={"ibug68": ibug, "mediapipe": mp},
        meta={"is_demo": True, "source": source, "seed": seed, "builder_version": BUILDER_VERSION,
              "licence": LICENCE_NOTE},
    )
    return add_teeth(asset)


def _cache_dir() -> Path:
    return Path(os.environ.get("POINTILLIST_CACHE", Path.home() / ".cache" / "pointillist"))


def demo_asset_path(seed: int = 0, basis_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Build (once) and cache the demo asset; return the cached ``.npz`` path.

    The cache key covers the builder version, the seed and the basis file's content.
    """
    h = hashlib.sha256(f"v{BUILDER_VERSION}-seed{seed}".encode())
    if basis_path is not None:
        h.update(Path(basis_path).read_bytes())
    out = Path(cache_dir or _cache_dir()) / f"demo_head_{h.hexdigest()[:16]}.npz"
    if not out.exists():
        save_flame_asset(build_demo_asset(seed, basis_path), out)
    return out


def resolve_flame_asset(path: str | Path | None = None, seed: int = 0) -> FlameAsset:
    """Load the FLAME model to use (see the module docstring for the search order)."""
    path = path or os.environ.get("POINTILLIST_FLAME_MODEL")
    if path:
        return load_flame_asset(path)
    return load_flame_asset(demo_asset_path(seed, find_flame_basis()))
