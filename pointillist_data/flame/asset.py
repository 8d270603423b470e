"""FLAME model assets: loading FLAME 2020 / 2023 / 2023 Open and the built-in demo head.

A :class:`FlameAsset` holds plain NumPy arrays in FLAME's layout (metres, y up, face
towards +z). It is read from

* an official FLAME ``.pkl`` (keys ``v_template f shapedirs posedirs J_regressor weights
  kintree_table``; ``shapedirs`` carries 300 shape then 100 expression directions),
  through :mod:`pointillist_data.flame.unpickle` so chumpy is never imported;
* the same keys in an ``.npz``;
* the toolkit's asset ``.npz`` (the same keys plus ``n_shape``, ``teeth``, landmark
  embeddings ``lmk_<set>_face_idx`` / ``lmk_<set>_b_coords`` / ``lmk_<set>_indices`` and a
  ``meta_json`` string), which :func:`save_flame_asset` writes.

Every array is validated (presence, shape, dtype kind, finiteness, index ranges) before
anything is returned; errors are :class:`FlameFileError` naming the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PointillistError
from ..fileio import atomic_savez
from . import teeth
from .unpickle import load_restricted_pickle

__all__ = [
    "FlameFileError",
    "LandmarkEmbedding",
    "FlameAsset",
    "load_flame_asset",
    "save_flame_asset",
    "load_landmark_embedding",
    "FLAME_JOINT_NAMES",
]

FLAME_JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
_DEFAULT_SPLIT = 300  # official FLAME: shapedirs[..., :300] shape, [..., 300:] expression


class FlameFileError(PointillistError, ValueError):
    """A FLAME model or landmark file is missing, malformed or non-finite."""

    def __init__(self, path: str | Path, key: str | None, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{path}" + (f" [{key}]" if key else "")
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Barycentric landmark embedding on a FLAME mesh.

    Attributes:
        face_idx: ``(L,)`` int64 face index per landmark.
        bary: ``(L, 3)`` float barycentric weights (rows sum to 1).
        indices: ``(L,)`` int64 detector index per landmark (the MediaPipe face-mesh index
            for the ``mediapipe`` set, ``0..67`` for ``ibug68``), or ``None``.
    """

    face_idx: np.ndarray
    bary: np.ndarray
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.face_idx.shape[0])


@dataclass
class FlameAsset:
    """A FLAME-format head model as NumPy arrays (FLAME space: metres, y up, +z forward).

    Attributes:
        v_template: ``(V, 3)`` template vertices.
        faces: ``(F, 3)`` int64 triangles.
        shapedirs: ``(V, 3, S)`` identity directions.
        exprdirs: ``(V, 3, E)`` expression directions.
        posedirs: ``(P, V*3)`` pose correctives in smplx layout (``P = 9 * (J - 1)``).
        J_regressor: ``(J, V)`` joint regressor.
        parents: ``(J,)`` int64 kinematic parents, ``parents[0] == -1``.
        lbs_weights: ``(V, J)`` skinning weights (rows sum to 1).
        landmarks: named :class:`LandmarkEmbedding` sets (``mediapipe``, ``ibug68``, ...).
        teeth: whether the teeth extension (+120 vertices, +168 faces) is present.
        meta: free-form provenance (``source``, ``licence``, ``is_demo``, ``seed``...).
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    landmarks: dict[str, LandmarkEmbedding] = field(default_factory=dict)
    teeth: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.J_regressor.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def n_expr(self) -> int:
        return int(self.exprdirs.shape[-1])

    @property
    def is_demo(self) -> bool:
        return bool(self.meta.get("is_demo", False))

    def copy(self, **changes: Any) -> FlameAsset:
        return replace(self, **changes)


def _as_array(path: Path, key: str, value: Any, *, ndim: int, kind: str = "f") -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:
        raise FlameFileError(path, key, "holds Python objects, expected a numeric array")
    if arr.ndim != ndim:
        raise FlameFileError(path, key, f"expected {ndim}-D array, got shape {arr.shape}")
    if kind == "f" and arr.dtype.kind not in "fiu":
        raise FlameFileError(path, key, f"expected a numeric array, got dtype {arr.dtype}")
    if kind == "i" and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise FlameFileError(path, key, f"expected an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise FlameFileError(path, key, "contains NaN or inf")
    return arr


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FlameFileError(path, None, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        obj = load_restricted_pickle(path)
        if not isinstance(obj, dict):
            raise FlameFileError(path, None, f"expected a dict in the pickle, got {type(obj).__name__}")
        return obj
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except ValueError as e:
            raise FlameFileError(path, None, f"unreadable npz ({e})") from e
    raise FlameFileError(path, None, f"unsupported file type '{suffix}' (expected .pkl or .npz)")


def _require(path: Path, d: dict[str, Any], key: str) -> Any:
    if key not in d:
        raise FlameFileError(path, key, f"missing key (present: {sorted(d)})")
    return d[key]


def _landmarks_from_mapping(path: Path, d: dict[str, Any], num_faces: int) -> dict[str, LandmarkEmbedding]:
    out: dict[str, LandmarkEmbedding] = {}
    for key in d:
        if key.startswith("lmk_") and key.endswith("_face_idx") and key != "lmk_face_idx":
            name = key[len("lmk_") : -len("_face_idx")]
            out[name] = _validate_embedding(
                path, f"lmk_{name}", d[key], _require(path, d, f"lmk_{name}_b_coords"),
                d.get(f"lmk_{name}_indices"), num_faces,
            )
    return out


def _validate_embedding(path: Path, key: str, face_idx: Any, bary: Any, indices: Any, num_faces: int) -> LandmarkEmbedding:
    fi = _as_array(path, f"{key}_face_idx", face_idx, ndim=1, kind="i").astype(np.int64)
    bc = _as_array(path, f"{key}_b_coords", bary, ndim=2).astype(np.float64)
    if bc.shape != (fi.shape[0], 3):
        raise FlameFileError(path, f"{key}_b_coords", f"expected shape ({fi.shape[0]}, 3), got {bc.shape}")
    if fi.size and (fi.min() < 0 or fi.max() >= num_faces):
        raise FlameFileError(path, f"{key}_face_idx", f"face index out of range [0, {num_faces})")
    if not np.allclose(bc.sum(1), 1.0, atol=1e-3):
        raise FlameFileError(path, f"{key}_b_coords", "barycentric rows do not sum to 1")
    idx = None
    if indices is not None:
        idx = _as_array(path, f"{key}_indices", indices, ndim=1, kind="i").astype(np.int64)
        if idx.shape != fi.shape:
            raise FlameFileError(path, f"{key}_indices", f"expected shape {fi.shape}, got {idx.shape}")
    return LandmarkEmbedding(fi, bc, idx)


def load_landmark_embedding(path: str | Path, num_faces: int) -> LandmarkEmbedding:
    """Read a FLAME landmark embedding file (``flame_static_embedding.pkl`` or
    ``mediapipe_landmark_embedding.npz``: keys ``lmk_face_idx``, ``lmk_b_coords`` and
    optionally ``landmark_indices``).

    Raises:
        FlameFileError: missing file or key, wrong shape, or a face index ``>= num_faces``.
    """
    path = Path(path)
    d = _read_mapping(path)
    return _validate_embedding(
        path, "lmk", _require(path, d, "lmk_face_idx"), _require(path, d, "lmk_b_coords"),
        d.get("landmark_indices"), num_faces,
    )


def load_flame_asset(path: str | Path, *, add_teeth: bool = True) -> FlameAsset:
    """Load and validate a FLAME model file.

    Args:
        path: official FLAME ``.pkl`` / ``.npz`` or a toolkit asset ``.npz``.
        add_teeth: append the teeth extension (:func:`pointillist_data.flame.teeth.add_teeth`)
            when the file has none, giving 5143 vertices / 10144 faces for FLAME.

    Returns:
        A fully validated :class:`FlameAsset` (float64 arrays, int64 indices).

    Raises:
        FlameFileError: naming the file and key for a missing file or key, a wrong shape or
            dtype, NaN / inf, or out-of-range indices. Nothing is returned half-loaded.
        pointillist_data.flame.unpickle.UnsafePickleError: a pickle referenced a class
            outside the allow-list.
    """
    path = Path(path)
    d = _read_mapping(path)
    v = _as_array(path, "v_template", _require(path, d, "v_template"), ndim=2).astype(np.float64)
    V = v.shape[0]
    if v.shape[1] != 3:
        raise FlameFileError(path, "v_template", f"expected shape (V, 3), got {v.shape}")
    f = _as_array(path, "f", _require(path, d, "f"), ndim=2, kind="i").astype(np.int64)
    if f.shape[1] != 3 or f.min() < 0 or f.max() >= V:
        raise FlameFileError(path, "f", f"expected (F, 3) indices in [0, {V}), got shape {f.shape}")
    sd = _as_array(path, "shapedirs", _require(path, d, "shapedirs"), ndim=3).astype(np.float64)
    if sd.shape[:2] != (V, 3):
        raise FlameFileError(path, "shapedirs", f"expected ({V}, 3, K), got {sd.shape}")
    n_shape = int(np.asarray(d["n_shape"])) if "n_shape" in d else min(_DEFAULT_SPLIT, sd.shape[2])
    if not 0 < n_shape <= sd.shape[2]:
        raise FlameFileError(path, "n_shape", f"{n_shape} not in (0, {sd.shape[2]}]")
    w = _as_array(path, "weights", _require(path, d, "weights"), ndim=2).astype(np.float64)
    J = w.shape[1]
    if w.shape[0] != V:
        raise FlameFileError(path, "weights", f"expected ({V}, J), got {w.shape}")
    if not np.allclose(w.sum(1), 1.0, atol=1e-4):
        raise FlameFileError(path, "weights", "skinning weights do not sum to 1 per vertex")
    jr = _as_array(path, "J_regressor", _require(path, d, "J_regressor"), ndim=2).astype(np.float64)
    if jr.shape != (J, V):
        raise FlameFileError(path, "J_regressor", f"expected ({J}, {V}), got {jr.shape}")
    kt = _as_array(path, "kintree_table", _require(path, d, "kintree_table"), ndim=2, kind="i").astype(np.int64)
    if kt.shape != (2, J):
        raise FlameFileError(path, "kintree_table", f"expected (2, {J}), got {kt.shape}")
    parents = kt[0].copy()
    parents[0] = -1
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, J)):
        raise FlameFileError(path, "kintree_table", "parents must precede their children")
    pd = _as_array(path, "posedirs", _require(path, d, "posedirs"), ndim=3).astype(np.float64)
    if pd.shape != (V, 3, 9 * (J - 1)):
        raise FlameFileError(path, "posedirs", f"expected ({V}, 3, {9 * (J - 1)}), got {pd.shape}")
    posedirs = pd.reshape(V * 3, -1).T.copy()

    landmarks = _landmarks_from_mapping(path, d, f.shape[0])
    if "lmk_face_idx" in d and "lmk_b_coords" in d:
        landmarks.setdefault("static", _validate_embedding(
            path, "lmk", d["lmk_face_idx"], d["lmk_b_coords"], d.get("landmark_indices"), f.shape[0]))
    meta: dict[str, Any] = {"source": str(path)}
    if "meta_json" in d:
        try:
            meta.update(json.loads(str(np.asarray(d["meta_json"]))))
        except json.JSONDecodeError as e:
            raise FlameFileError(path, "meta_json", f"not valid JSON ({e})") from e
    has_teeth = bool(np.asarray(d["teeth"])) if "teeth" in d else False
    asset = FlameAsset(
        v_template=v, faces=f, shapedirs=sd[..., :n_shape].copy(), exprdirs=sd[..., n_shape:].copy(),
        posedirs=posedirs, J_regressor=jr, parents=parents, lbs_weights=w,
        landmarks=landmarks, teeth=has_teeth, meta=meta,
    )
    if add_teeth and not has_teeth:
        asset = teeth.add_teeth(asset)
    return asset


def asset_to_mapping(asset: FlameAsset) -> dict[str, np.ndarray]:
    """The toolkit's npz layout of an asset (see module docstring)."""
    V, J = asset.num_vertices, asset.num_joints
    d: dict[str, np.ndarray] = {
        "v_template": asset.v_template.astype(np.float64),
        "f": asset.faces.astype(np.int64),
        "shapedirs": np.concatenate([asset.shapedirs, asset.exprdirs], axis=2).astype(np.float64),
        "n_shape": np.asarray(asset.n_shape, dtype=np.int64),
        "posedirs": asset.posedirs.T.reshape(V, 3, -1).astype(np.float64),
        "J_regressor": asset.J_regressor.astype(np.float64),
        "weights": asset.lbs_weights.astype(np.float64),
        "kintree_table": np.stack([np.where(asset.parents < 0, 4294967295, asset.parents), np.arange(J)]).astype(np.int64),
        "teeth": np.asarray(asset.teeth),
        "meta_json": np.asarray(json.dumps(asset.meta, sort_keys=True)),
    }
    for name, emb in asset.landmarks.items():
        d[f"lmk_{name}_face_idx"] = emb.face_idx.astype(np.int64)
        d[f"lmk_{name}_b_coords"] = emb.bary.astype(np.float64)
        if emb.indices is not None:
            d[f"lmk_{name}_indices"] = emb.indices.astype(np.int64)
    return d


def save_flame_asset(asset: FlameAsset, path: str | Path) -> Path:
    """Write ``asset`` as a toolkit asset ``.npz`` atomically (temporary name, then rename)."""
    return atomic_savez(path, compressed=True, **asset_to_mapping(asset))
