"""The built-in demo head: a complete FLAME-format asset on the real FLAME 2023 Open topology.

Real FLAME files are licence-gated, so the toolkit ships the CC-BY-4.0 FLAME 2023 Open
extract (``data/flame2023_open_basis.npz``: template, faces, 60 identity directions,
MediaPipe embedding; attribution and changes in ``data/NOTICE.md``) as package data and
builds the demo head on it, whatever the working directory. Joints, skinning weights and
expression directions are derived procedurally (:mod:`.rigging`), pose correctives are
zero, and the teeth are added (5143 vertices, 10144 faces: the paper's vocabulary). The
asset is cached on disk and read back through :func:`load_flame_asset`, the same loader as
real FLAME files.

**The demo head serves demos and tests. It is no substitute for FLAME in research.**

Model selection (:func:`resolve_flame_asset`): an explicit path, else the environment
variable ``POINTILLIST_FLAME_MODEL`` (a real FLAME ``.pkl``/``.npz``), else the demo head.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np

from .asset import FlameAsset, FlameFileError, LandmarkEmbedding, load_flame_asset, save_flame_asset
from .meshops import boundary_loops, vertex_components
from .rigging import MP_TO_IBUG68, derive_expressions, derive_joints, derive_weights, jaw_contour_embedding
from .teeth import add_teeth

__all__ = ["build_demo_asset", "demo_asset_path", "bundled_flame_basis", "resolve_flame_asset", "LICENCE_NOTE",
           "BUILDER_VERSION", "DEMO_HEAD_NAME"]

BUILDER_VERSION = 4
DEMO_HEAD_NAME = "pointillist demo head (FLAME 2023 Open topology)"
LICENCE_NOTE = (
    "Demo head: for demos and tests only, no substitute for FLAME in research. "
    "Template, topology, identity basis and MediaPipe embedding from FLAME 2023 Open, CC-BY-4.0, "
    "(c) Max Planck Institute for Intelligent Systems; rigging, expressions and teeth are procedural "
    "(see pointillist_data/flame/data/NOTICE.md)."
)
BASIS_NAME = "flame2023_open_basis.npz"
BASIS_SHA256 = "e21caaa088de07b0c5aeefbcca070206fac31f1fc5522e1304d745d89adb63a6"


def bundled_flame_basis() -> Path:
    """Path of the FLAME 2023 Open extract shipped inside the package (CC-BY-4.0)."""
    return Path(str(resources.files("pointillist_data.flame") / "data" / BASIS_NAME))


def _lmk(verts: np.ndarray, faces: np.ndarray, emb: LandmarkEmbedding) -> np.ndarray:
    return np.einsum("lk,lkd->ld", emb.bary, verts[faces[emb.face_idx]])


def build_demo_asset(seed: int = 0, basis_path: str | Path | None = None, n_expr: int = 12) -> FlameAsset:
    """Build the demo head asset (with teeth) in memory.

    Args:
        seed: recorded in the asset's metadata (the head itself is deterministic: the
            extract's 60 real identity directions, procedural rigging without randomness).
        basis_path: a FLAME 2023 Open extract (default: the bundled one).
        n_expr: number of expression directions (at most 12 semantic ones).

    Returns:
        A :class:`FlameAsset` with 5143 vertices and 10144 faces for the bundled extract.

    Raises:
        FlameFileError: the basis file is unreadable or lacks a key.
    """
    basis_path = Path(basis_path) if basis_path is not None else bundled_flame_basis()
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
    lmk51 = np.einsum("lk,lkd->ld", bc51, verts[faces[fi51]])
    fi_jaw, bc_jaw = jaw_contour_embedding(verts, faces, lmk51)
    ibug = LandmarkEmbedding(np.concatenate([fi_jaw, fi51]), np.concatenate([bc_jaw, bc51]), np.arange(68))
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
        meta={"is_demo": True, "source": DEMO_HEAD_NAME, "basis": basis_path.name, "seed": seed,
              "builder_version": BUILDER_VERSION, "licence": LICENCE_NOTE},
    )
    return add_teeth(asset)


def _cache_dir() -> Path:
    return Path(os.environ.get("POINTILLIST_CACHE", Path.home() / ".cache" / "pointillist"))


def demo_asset_path(seed: int = 0, basis_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Build (once) and cache the demo asset; return the cached ``.npz`` path.

    The cache (``$POINTILLIST_CACHE``, default ``~/.cache/pointillist``) is keyed by the
    builder version, the seed and the basis file's content.
    """
    h = hashlib.sha256(f"v{BUILDER_VERSION}-seed{seed}".encode())
    h.update(Path(basis_path).read_bytes() if basis_path is not None else BASIS_SHA256.encode())
    out = Path(cache_dir or _cache_dir()) / f"demo_head_{h.hexdigest()[:16]}.npz"
    if not out.exists():
        save_flame_asset(build_demo_asset(seed, basis_path), out)
    return out


def resolve_flame_asset(path: str | Path | None = None, seed: int = 0) -> FlameAsset:
    """Load the FLAME model to use (see the module docstring for the search order)."""
    path = path or os.environ.get("POINTILLIST_FLAME_MODEL")
    if path:
        return load_flame_asset(path)
    return load_flame_asset(demo_asset_path(seed))
