"""FLAME motions from other tools -> :class:`~pointillist_data.flame.params.FlameParams`.

One reader for every command that drives an avatar (``pointillist animate``,
``pointillist avatar --motion``). Formats (facts from the upstream sources, docs/INTEROP.md):

``vhap``
    VHAP's ``tracked_flame_params_<epoch>.npz`` (``vhap/model/tracker.py`` ``save_result``),
    or a tracking folder holding them (the largest epoch, as VHAP's exporter chooses), and
    the toolkit's own ``track`` output (the same layout).
``gaussian_avatars``
    GaussianAvatars' ``flame_param.npz`` beside a PLY: exactly ``shape expr rotation
    neck_pose jaw_pose eyes_pose translation static_offset dynamic_offset``.
``lam_json``
    LAM's ``flame_params.json`` (aigc3d/LAM, the motion file of its avatar archive, read by
    its web renderer): a JSON object of per-frame lists ``rotation neck_pose jaw_pose (T, 3)``,
    ``eyes_pose (T, 6)``, ``expr (T, E)``, optionally ``translation (T, 3)`` (zero when
    absent: the renderer does not use it) and ``shape``.
``frames``
    A folder of per-frame files read in name order: ``*.npz`` (VHAP's export and LAM's
    sample motions ``flame_param/<t:05d>.npz``, arrays ``(d,)`` or ``(1, d)``) or ``*.json``
    (one frame each, 1-D lists). A folder holding ``flame_param/`` (an export) reads that.

Every motion is checked like an import (:func:`.common.check_ranges`: radians, metres,
plausible coefficients) so that a file in degrees or millimetres is refused, not rendered.
Expression coefficients are mapped to the head model's count (truncated or zero-padded) and
the mapping is reported as one warning line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..flame.params import FlameParams, FlameParamsError, find_tracked_params
from .common import check_ranges, fit_to_head_model

__all__ = ["Motion", "MOTION_FORMATS", "read_motion", "map_expressions"]

MOTION_FORMATS = ("vhap", "gaussian_avatars", "lam_json", "frames")
_POSE = {"rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}
_GA_ONLY = {"dynamic_offset"}


class Motion(NamedTuple):
    """A motion read from a file or folder.

    Attributes:
        params: ``T`` timesteps of FLAME parameters (VHAP key names; ``expr (T, n_expr)``;
            the driver's own ``shape`` and offsets kept for rendering the driver).
        format: one of :data:`MOTION_FORMATS`.
        source: the file (or folder of frames) read.
        warnings: one line each (the expression-count mapping), for the command to print.
    """

    params: FlameParams
    format: str
    source: str
    warnings: list[str]


def map_expressions(params: FlameParams, n_expr: int, where: str) -> tuple[FlameParams, str | None]:
    """Truncate or zero-pad ``expr`` to ``n_expr`` coefficients.

    Returns:
        ``(params, warning)``; ``warning`` is one line naming ``where``, both counts and what
        was done (for truncation: whether the dropped coefficients were all zero), or
        ``None`` when the counts agree.
    """
    E = params.expr.shape[1]
    if E == n_expr:
        return params, None
    if E > n_expr:
        rest = float(np.abs(params.expr[:, n_expr:]).max(initial=0.0))
        what = (f"the last {E - n_expr} are dropped ("
                + ("all zero, nothing lost)" if rest == 0 else f"largest |value| {rest:.3g})"))
        params.expr = np.ascontiguousarray(params.expr[:, :n_expr])
    else:
        what = f"zero-padded to {n_expr}"
        params.expr = np.pad(params.expr, ((0, 0), (0, n_expr - E)))
    return params, f"{where}: {E} expression coefficients, the head model has {n_expr}: {what}"


def read_motion(path: str | Path, n_expr: int, num_vertices: int | None = None) -> Motion:
    """Read a FLAME motion in any of :data:`MOTION_FORMATS` (see the module docstring).

    Args:
        path: a motion file (``.npz``, ``.json``) or folder.
        n_expr: the head model's expression count (:attr:`FlameAsset.n_expr`); ``expr`` is
            mapped to it with a warning when the file's differs.
        num_vertices: the head model's vertex count: offsets of a FLAME without teeth are
            zero-padded to it (``None``: offsets are dropped).

    Returns:
        :class:`Motion`.

    Raises:
        FileNotFoundError: no such file or folder.
        FlameParamsError: a file that is no npz or JSON of numbers (text, pickled objects),
            a missing key, a wrong shape, NaN / inf, no frames, or an empty folder (the file named).
        InteropError: values out of FLAME's units (degrees, millimetres) or offsets of a
            bigger head model (the file named).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: motion not found")
    if path.is_dir():
        params, fmt, src = _read_folder(path)
    elif path.suffix.lower() == ".json":
        params, fmt, src = _read_json(path), "lam_json", path
    else:
        params = FlameParams.load(path)
        fmt = "gaussian_avatars" if _GA_ONLY & set(params.to_dict()) and params.timestep_id is None else "vhap"
        src = path
    where = str(src)
    if params.num_frames == 0:
        raise FlameParamsError(f"{where}: the motion has no frames")
    if num_vertices is None:
        params.static_offset = params.dynamic_offset = None
    else:
        params, _ = fit_to_head_model(params, num_vertices, where)
    check_ranges(params, where)
    params, warning = map_expressions(params, n_expr, where)
    params.source = where
    return Motion(params, fmt, where, [warning] if warning else [])


def _read_folder(folder: Path) -> tuple[FlameParams, str, Path]:
    if (folder / "flame_params.json").is_file():
        return _read_json(folder / "flame_params.json"), "lam_json", folder / "flame_params.json"
    if any(folder.glob("tracked_flame_params*.npz")):
        p = find_tracked_params(folder)
        return FlameParams.load(p), "vhap", p
    if (folder / "flame_param").is_dir():
        folder = folder / "flame_param"
    files = {s: sorted(p for p in folder.iterdir() if p.suffix.lower() == s and p.is_file()) for s in (".npz", ".json")}
    if files[".npz"] and files[".json"]:
        raise FlameParamsError(f"{folder}: holds both .npz and .json frames; keep one kind per motion folder")
    frames = files[".npz"] or files[".json"]
    if not frames:
        raise FlameParamsError(f"{folder}: empty (no flame_params.json, tracked_flame_params_<epoch>.npz, "
                               "flame_param/ or per-frame .npz / .json files)")
    read = FlameParams.load if frames[0].suffix.lower() == ".npz" else _read_json
    items = [read(p) for p in frames]
    widths = {p.expr.shape[1] for p in items}
    if len(widths) > 1:
        raise FlameParamsError(f"{folder}: frames disagree on the expression count ({sorted(widths)})")
    return FlameParams.concatenate(items), "frames", folder


def _read_json(path: Path) -> FlameParams:
    """LAM's ``flame_params.json`` (per-frame lists) or one frame of 1-D lists."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FlameParamsError(f"{path}: not valid JSON (binary data)") from None
    except json.JSONDecodeError as e:
        raise FlameParamsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise FlameParamsError(f"{path}: expected a JSON object of FLAME parameters, got {type(d).__name__}")
    missing = [k for k in (*_POSE, "expr") if k not in d]
    if missing:
        raise FlameParamsError(f"{path}: missing key(s) {missing}")
    arrays = {k: _numbers(d[k], k, path) for k in (*_POSE, "expr", "translation", "shape") if k in d}
    per_frame = [k for k in (*_POSE, "expr", "translation") if k in arrays]
    one_frame = arrays["expr"].ndim == 1
    for k in per_frame:
        if arrays[k].ndim == 1 and one_frame:
            arrays[k] = arrays[k][None]
    T = arrays["expr"].shape[0] if arrays["expr"].ndim == 2 else 0
    arrays.setdefault("translation", np.zeros((T, 3), np.float32))
    shape = arrays.pop("shape", np.zeros(0, np.float32)).reshape(-1)
    return FlameParams(**arrays, shape=shape, source=str(path))


def _numbers(value: object, key: str, path: Path) -> np.ndarray:
    """A JSON list (of lists) of numbers as float32; ragged lists, strings and non-finite
    values are refused naming ``key``."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FlameParamsError(f"{path}: '{key}' must be a list of numbers with one length per frame") from None
    if a.ndim > 2:
        raise FlameParamsError(f"{path}: '{key}' expected one list per frame, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = next(x for x in a.reshape(-1) if not math.isfinite(x))
        raise FlameParamsError(f"{path}: '{key}' contains {bad}")
    return a.astype(np.float32)
