"""Decoded frames on disk, read one frame at a time: the stages' memory-bounded image arrays.

Tracking needs random access to any (timestep, camera) image (its photometric and
silhouette terms sample frames and cameras at random) and the export needs every one once;
decoding H.264 at random positions means decoding from the previous key frame each time.
So each camera's video is decoded once, sequentially, into a :class:`FrameArray`: a
``(T, C, H, W, 3)`` (images) or ``(T, C, H, W)`` (masks) uint8 array stored as one
compressed zarr chunk per frame (zstd level 1: lossless, ~5 ms to read a 550 x 802 frame)
in a scratch folder. Indexing reads only the frames asked for, so memory does not grow with
the number of frames; the folder is removed when its :class:`FrameCache` is closed or
garbage collected.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

__all__ = ["FrameCache", "FrameArray"]


class FrameCache:
    """A scratch folder holding :class:`FrameArray` s; removed on :meth:`close`, on exit of a
    ``with`` block, or when the object is garbage collected.

    Args:
        parent: where to create the folder (default: ``$TMPDIR``). Stages put it inside their
            output folder so that it sits on the same disk as the outputs.
    """

    def __init__(self, parent: str | Path | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=".frames-", dir=parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def array(self, name: str, shape: tuple[int, ...]) -> FrameArray:
        """A new uint8 array ``shape = (T, C, H, W[, 3])``, one chunk per frame."""
        arr = zarr.create_array(store=str(self.path / name), shape=shape, chunks=(1, 1) + tuple(shape[2:]),
                                dtype="uint8", fill_value=0,
                                compressors=BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"))
        return FrameArray(arr, owner=self)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> FrameCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FrameArray:
    """A lazy ``(T, C, H, W[, 3])`` uint8 array read one frame at a time.

    Indexing: ``a[t, c]`` -> ``(H, W[, 3])`` ndarray; ``a[t]`` -> ``(C, H, W[, 3])``;
    ``a[t, cams]`` (a list / array of camera indices) -> ``(len(cams), H, W[, 3])``;
    ``a[rows]`` with a list, array or slice of timesteps -> a lazy view of those timesteps
    (nothing is read); ``a[rows, c]`` reads those frames into one array, as does
    ``np.asarray(a)`` (short clips only).

    Args:
        array: the zarr array; rows: timesteps of ``array`` this view shows (default all);
        owner: the :class:`FrameCache` kept alive while a view exists.
    """

    def __init__(self, array: zarr.Array, rows: np.ndarray | None = None, owner: FrameCache | None = None) -> None:
        self._a, self._owner = array, owner
        self._rows = np.arange(array.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._rows),) + tuple(self._a.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return len(self._a.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self._rows)

    def __setitem__(self, key: tuple[int, int], value: np.ndarray) -> None:
        t, c = key
        self._a[int(self._rows[t]), int(c)] = value

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        t, rest = key[0], key[1:]
        if isinstance(t, (slice, list, np.ndarray)):
            view = FrameArray(self._a, self._rows[t], self._owner)
            # several timesteps and a camera: read them all (short clips; views stay lazy)
            return view if not rest else np.stack([view[(i, *rest)] for i in range(len(view))])
        if not isinstance(t, (int, np.integer)):
            raise IndexError(f"FrameArray: cannot index timesteps with {type(t).__name__}")
        row = int(self._rows[t])
        if not rest:
            return np.asarray(self._a[row])
        c, pix = rest[0], rest[1:]
        if hasattr(c, "tolist"):
            c = c.tolist()
        if isinstance(c, (int, np.integer)):
            img = np.asarray(self._a[row, int(c)])
        else:
            cams = range(self._a.shape[1])[c] if isinstance(c, slice) else c
            img = np.stack([np.asarray(self._a[row, int(i)]) for i in cams])
        return img[pix] if pix else img

    def __iter__(self):
        for t in range(len(self)):
            yield self[t]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.stack([np.asarray(self._a[int(r)]) for r in self._rows]) if len(self._rows) else \
            np.zeros(self.shape, np.uint8)
        return out.astype(dtype) if dtype is not None else out
