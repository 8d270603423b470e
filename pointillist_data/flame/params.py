"""FLAME parameters per sequence with VHAP's key names, and the npz files of VHAP and
GaussianAvatars.

==================  ==============  =======================================
key                 shape           meaning
==================  ==============  =======================================
``rotation``        ``(T, 3)``      global axis-angle (radians)
``translation``     ``(T, 3)``      metres, added after skinning
``neck_pose``       ``(T, 3)``      axis-angle
``jaw_pose``        ``(T, 3)``      axis-angle
``eyes_pose``       ``(T, 6)``      left, right axis-angle
``shape``           ``(300,)``      identity coefficients (shared)
``expr``            ``(T, 100)``    expression coefficients
``static_offset``   ``(1, V, 3)``   per-vertex offset before skinning (optional)
``dynamic_offset``  ``(T, V, 3)``   per-frame offset before skinning (optional)
``timestep_id``     ``(T,)``        optional string ids
``image_size``      ``(2,)``        optional ``(H, W)``
``n_processed_frames`` ``()``       optional int
==================  ==============  =======================================

Three file layouts (VHAP ``vhap/model/tracker.py`` ``save_result``,
``vhap/export_as_nerf_dataset.py``; GaussianAvatars ``scene/flame_gaussian_model.py``):

* :meth:`FlameParams.save` - VHAP's ``tracked_flame_params_<epoch>.npz``: every key that is
  set, ``timestep_id`` as strings (VHAP's exporter picks the file with the largest
  ``<epoch>`` suffix, see :func:`find_tracked_params`);
* :meth:`FlameParams.save_numeric` - VHAP's per-timestep ``flame_param/<t:05d>.npz`` and
  ``canonical_flame_param.npz``: the FLAME arrays only (numbers, no ids);
* :meth:`FlameParams.save_gaussian_avatars` - GaussianAvatars' ``flame_param.npz`` beside a
  PLY, which it reads with ``torch.from_numpy`` on every entry: exactly ``shape expr
  rotation neck_pose jaw_pose eyes_pose translation static_offset (1, V, 3)
  dynamic_offset (T, V, 3)``, all float32.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PointillistError
from ..fileio import atomic_savez

__all__ = ["FlameParams", "FlameParamsError", "N_SHAPE", "N_EXPR", "find_tracked_params", "tracked_params_name",
           "GA_KEYS"]

N_SHAPE, N_EXPR = 300, 100
_PER_FRAME = {"rotation": 3, "translation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}
_FLAME_KEYS = ("translation", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr")
GA_KEYS = ("shape", "expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "static_offset",
           "dynamic_offset")
_TRACKED = re.compile(r"^tracked_flame_params_(\d+)\.npz$")


class FlameParamsError(PointillistError, ValueError):
    """A FLAME parameter file or array has a missing key, a wrong shape or non-finite values."""


def _check(arr: Any, key: str, shape: tuple[int | None, ...], where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise FlameParamsError(f"{where}: '{key}' must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=False)):
        raise FlameParamsError(f"{where}: '{key}' expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise FlameParamsError(f"{where}: '{key}' contains NaN or inf")
    return a


@dataclass
class FlameParams:
    """A sequence of FLAME parameters (float32 NumPy arrays, VHAP key names and shapes).

    ``shape`` is shared by all ``T`` timesteps; per-frame arrays have a leading ``T``.
    ``__post_init__`` validates shapes and finiteness and raises :class:`FlameParamsError`.
    """

    rotation: np.ndarray
    translation: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eyes_pose: np.ndarray
    shape: np.ndarray
    expr: np.ndarray
    static_offset: np.ndarray | None = None
    dynamic_offset: np.ndarray | None = None
    timestep_id: np.ndarray | None = None
    image_size: np.ndarray | None = None
    n_processed_frames: int | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        w = self.source
        self.expr = _check(self.expr, "expr", (None, None), w)
        T = self.expr.shape[0]
        for k, d in _PER_FRAME.items():
            setattr(self, k, _check(getattr(self, k), k, (T, d), w))
        self.shape = _check(self.shape, "shape", (None,), w)
        if self.static_offset is not None:
            if np.ndim(self.static_offset) == 2:  # GaussianAvatars writes (V, 3) when it disables the offset
                self.static_offset = np.asarray(self.static_offset)[None]
            self.static_offset = _check(self.static_offset, "static_offset", (1, None, 3), w)
        if self.dynamic_offset is not None:
            self.dynamic_offset = _check(self.dynamic_offset, "dynamic_offset", (T, None, 3), w)
        if self.timestep_id is not None:
            self.timestep_id = np.asarray(self.timestep_id).astype(str)
            if self.timestep_id.shape != (T,):
                raise FlameParamsError(f"{w}: 'timestep_id' expected shape ({T},), got {self.timestep_id.shape}")
        if self.image_size is not None:
            self.image_size = np.asarray(self.image_size, dtype=np.int64).reshape(-1)
        if self.n_processed_frames is not None:
            self.n_processed_frames = int(np.asarray(self.n_processed_frames))

    @property
    def num_frames(self) -> int:
        return int(self.expr.shape[0])

    @classmethod
    def zeros(cls, num_frames: int = 1, n_shape: int = N_SHAPE, n_expr: int = N_EXPR, num_vertices: int | None = None) -> FlameParams:
        """Neutral parameters (``T = num_frames``); ``static_offset`` zeros when ``num_vertices``."""
        z = lambda *s: np.zeros(s, dtype=np.float32)  # noqa: E731
        return cls(
            rotation=z(num_frames, 3), translation=z(num_frames, 3), neck_pose=z(num_frames, 3),
            jaw_pose=z(num_frames, 3), eyes_pose=z(num_frames, 6), shape=z(n_shape), expr=z(num_frames, n_expr),
            static_offset=None if num_vertices is None else z(1, num_vertices, 3),
        )

    def frame(self, t: int | slice) -> FlameParams:
        """Parameters of timestep(s) ``t`` (a ``FlameParams`` with ``T = 1`` for an int)."""
        sl = slice(t, t + 1) if isinstance(t, int) else t
        if isinstance(t, int) and not -self.num_frames <= t < self.num_frames:
            raise IndexError(f"timestep {t} out of range for {self.num_frames} frames")
        kw = {k: getattr(self, k)[sl] for k in (*_PER_FRAME, "expr")}
        return FlameParams(
            **kw, shape=self.shape, static_offset=self.static_offset,
            dynamic_offset=None if self.dynamic_offset is None else self.dynamic_offset[sl],
            timestep_id=None if self.timestep_id is None else self.timestep_id[sl],
            image_size=self.image_size, source=self.source,
        )

    @classmethod
    def concatenate(cls, items: list[FlameParams]) -> FlameParams:
        """Stack frames of several parameter sets sharing one shape (the first's shape is kept)."""
        if not items:
            raise FlameParamsError("nothing to concatenate")
        cat = lambda k: np.concatenate([getattr(p, k) for p in items])  # noqa: E731
        tid = None if any(p.timestep_id is None for p in items) else cat("timestep_id")
        dyn = None if any(p.dynamic_offset is None for p in items) else cat("dynamic_offset")
        return cls(**{k: cat(k) for k in (*_PER_FRAME, "expr")}, shape=items[0].shape,
                   static_offset=items[0].static_offset, dynamic_offset=dyn, timestep_id=tid,
                   image_size=items[0].image_size)

    def to_dict(self) -> dict[str, np.ndarray]:
        """The npz mapping, VHAP key names, optional keys only when set."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "source" and v is not None:
                out[f.name] = np.asarray(v) if f.name == "n_processed_frames" else v
        return out

    def to_torch(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Tensors for :meth:`FlameModel.forward_params` (``shape`` broadcast to ``(T, S)``).

        ``dynamic_offset`` is folded into ``static_offset`` (both are added to the template
        before skinning, as in VHAP's FLAME), which is then ``(T, V, 3)``.
        """
        out = {k: torch.as_tensor(getattr(self, k), dtype=dtype, device=device) for k in (*_PER_FRAME, "expr")}
        out["shape"] = torch.as_tensor(self.shape, dtype=dtype, device=device)[None].expand(self.num_frames, -1)
        offsets = [torch.as_tensor(o, dtype=dtype, device=device) for o in (self.static_offset, self.dynamic_offset)
                   if o is not None]
        if offsets:
            out["static_offset"] = offsets[0] if len(offsets) == 1 else offsets[0] + offsets[1]
        return out

    @classmethod
    def from_torch(cls, tensors: dict[str, torch.Tensor], **extra: Any) -> FlameParams:
        """Inverse of :meth:`to_torch` (``shape`` taken from the first row when 2-D)."""
        np_ = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
        if np_["shape"].ndim == 2:
            np_["shape"] = np_["shape"][0]
        keys = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in np_.items() if k in keys}, **extra)

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write VHAP's ``tracked_flame_params`` layout: every key that is set (plus
        ``extra`` arrays, e.g. ``focal_length``), uncompressed (VHAP writes ``np.savez``),
        atomically."""
        return atomic_savez(path, **self.to_dict(), **(extra or {}))

    def save_numeric(self, path: str | Path) -> Path:
        """Write VHAP's per-timestep / canonical layout: ``translation rotation neck_pose
        jaw_pose eyes_pose shape expr`` and the offsets that are set; numbers only."""
        d = {k: getattr(self, k) for k in _FLAME_KEYS}
        for k in ("static_offset", "dynamic_offset"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return atomic_savez(path, **d)

    def save_gaussian_avatars(self, path: str | Path, num_vertices: int) -> Path:
        """Write GaussianAvatars' ``flame_param.npz`` (see the module docstring): float32
        arrays only, ``static_offset (1, V, 3)`` and ``dynamic_offset (T, V, 3)`` zero-filled
        when not set.

        Raises:
            FlameParamsError: an offset whose vertex count is not ``num_vertices``.
        """
        T = self.num_frames
        d = {k: np.asarray(getattr(self, k), dtype=np.float32) for k in GA_KEYS[:7]}
        for k, lead in (("static_offset", 1), ("dynamic_offset", T)):
            v = getattr(self, k)
            if v is not None and v.shape[1] != num_vertices:
                raise FlameParamsError(f"{path}: '{k}' has {v.shape[1]} vertices, the head model {num_vertices}")
            d[k] = np.zeros((lead, num_vertices, 3), np.float32) if v is None else np.asarray(v, dtype=np.float32)
        return atomic_savez(path, **d)

    @classmethod
    def load(cls, path: str | Path) -> FlameParams:
        """Read a VHAP / GaussianAvatars FLAME parameter npz.

        Per-timestep files (``flame_param/00000.npz``) with 1-D per-frame arrays are accepted
        and given ``T = 1``.

        Raises:
            FileNotFoundError: no such file.
            FlameParamsError: a file that is no numeric npz (text, pickled objects, a damaged
                archive), a missing key, wrong shape or NaN / inf (file and key named).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: FLAME parameter file not found")
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise FlameParamsError(f"{path}: not a readable FLAME parameter npz (a single .npy array)")
            with z:
                d = {k: _read_entry(z, k, path) for k in z.files}
        except ValueError as e:  # numpy's words for text, pickles and object arrays: "pickled data"
            if isinstance(e, FlameParamsError):
                raise
            what = "Python objects or text (pickled data), not numeric arrays" if "pickle" in str(e) else str(e)
            raise FlameParamsError(f"{path}: not a readable FLAME parameter npz ({what})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise FlameParamsError(f"{path}: not a readable FLAME parameter npz ({type(e).__name__}: {e})") from None
        missing = [k for k in (*_PER_FRAME, "shape", "expr") if k not in d]
        if missing:
            raise FlameParamsError(f"{path}: missing key(s) {missing}")
        for k in (*_PER_FRAME, "expr"):
            if d[k].ndim == 1:
                d[k] = d[k][None]
        if d["shape"].ndim == 2:
            d["shape"] = d["shape"][0]
        keys = {f.name for f in fields(cls)} - {"source"}
        return cls(**{k: v for k, v in d.items() if k in keys}, source=str(path))


def _read_entry(z: Any, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError:  # an object array: numpy refuses it without pickle (never allowed here)
        raise FlameParamsError(f"{path}: '{key}' holds Python objects (pickled data), not numbers") from None


def tracked_params_name(epoch: int) -> str:
    """VHAP's file name ``tracked_flame_params_<epoch>.npz``."""
    if int(epoch) < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return f"tracked_flame_params_{int(epoch)}.npz"


def find_tracked_params(folder: str | Path, epoch: int | None = None) -> Path:
    """The ``tracked_flame_params_<epoch>.npz`` of a tracking folder, chosen as VHAP's
    exporter chooses it: the largest ``<epoch>`` unless ``epoch`` is given.

    Raises:
        FlameParamsError: no such file, or a ``tracked_flame_params*.npz`` whose name has no
            integer suffix (VHAP's exporter would fail on it).
    """
    folder = Path(folder)
    found = {}
    for p in folder.glob("tracked_flame_params*.npz"):
        m = _TRACKED.match(p.name)
        if m is None:
            raise FlameParamsError(f"{p}: VHAP's exporter needs tracked_flame_params_<epoch>.npz (an integer suffix)")
        found[int(m.group(1))] = p
    if not found:
        raise FlameParamsError(f"{folder}: no tracked_flame_params_<epoch>.npz")
    if epoch is None:
        return found[max(found)]
    if epoch not in found:
        raise FlameParamsError(f"{folder}: no tracked parameters of epoch {epoch} (found {sorted(found)})")
    return found[epoch]
