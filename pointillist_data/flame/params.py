"""FLAME parameters per sequence with VHAP's key names, and their npz files.

VHAP's ``tracked_flame_params*.npz`` and GaussianAvatars' ``flame_param.npz`` /
``flame_param/{t:05d}.npz`` hold (CONVENTIONS, "VHAP (tracking) formats"):

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
``dynamic_offset``  ``(T, V, 3)``   optional
``timestep_id``     ``(T,)``        optional string ids
``image_size``      ``(2,)``        optional ``(H, W)``
==================  ==============  =======================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PointillistError
from ..fileio import atomic_savez

__all__ = ["FlameParams", "FlameParamsError", "N_SHAPE", "N_EXPR"]

N_SHAPE, N_EXPR = 300, 100
_PER_FRAME = {"rotation": 3, "translation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6}


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
    source: str = "<memory>"

    def __post_init__(self) -> None:
        w = self.source
        self.expr = _check(self.expr, "expr", (None, None), w)
        T = self.expr.shape[0]
        for k, d in _PER_FRAME.items():
            setattr(self, k, _check(getattr(self, k), k, (T, d), w))
        self.shape = _check(self.shape, "shape", (None,), w)
        if self.static_offset is not None:
            self.static_offset = _check(self.static_offset, "static_offset", (1, None, 3), w)
        if self.dynamic_offset is not None:
            self.dynamic_offset = _check(self.dynamic_offset, "dynamic_offset", (T, None, 3), w)
        if self.timestep_id is not None:
            self.timestep_id = np.asarray(self.timestep_id).astype(str)
            if self.timestep_id.shape != (T,):
                raise FlameParamsError(f"{w}: 'timestep_id' expected shape ({T},), got {self.timestep_id.shape}")
        if self.image_size is not None:
            self.image_size = np.asarray(self.image_size, dtype=np.int64).reshape(-1)

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
                out[f.name] = v
        return out

    def to_torch(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Tensors for :meth:`FlameModel.forward_params` (``shape`` broadcast to ``(T, S)``)."""
        out = {k: torch.as_tensor(getattr(self, k), dtype=dtype, device=device) for k in (*_PER_FRAME, "expr")}
        out["shape"] = torch.as_tensor(self.shape, dtype=dtype, device=device)[None].expand(self.num_frames, -1)
        if self.static_offset is not None:
            out["static_offset"] = torch.as_tensor(self.static_offset, dtype=dtype, device=device)
        return out

    @classmethod
    def from_torch(cls, tensors: dict[str, torch.Tensor], **extra: Any) -> FlameParams:
        """Inverse of :meth:`to_torch` (``shape`` taken from the first row when 2-D)."""
        np_ = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
        if np_["shape"].ndim == 2:
            np_["shape"] = np_["shape"][0]
        keys = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in np_.items() if k in keys}, **extra)

    def save(self, path: str | Path) -> Path:
        """Write an uncompressed npz (VHAP writes ``np.savez``) atomically."""
        return atomic_savez(path, **self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FlameParams:
        """Read a VHAP / GaussianAvatars FLAME parameter npz.

        Per-timestep files (``flame_param/00000.npz``) with 1-D per-frame arrays are accepted
        and given ``T = 1``.

        Raises:
            FileNotFoundError: no such file.
            FlameParamsError: a missing key, wrong shape or NaN / inf (file and key named).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: FLAME parameter file not found")
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
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
