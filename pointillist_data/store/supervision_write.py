"""Writing supervision stores on the shared commit layer (:mod:`pointillist_data.store.commit`):
whole new shards, per-identity rows, manifest, then the offsets (see
:mod:`pointillist_data.store.supervision` for the layout)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import ConfigError
from ..portrait import PORTRAIT_SIZE
from .base import StoreError
from .commit import AppendOnlyWriter
from .supervision import (
    CAMERA_ARRAYS,
    PER_TIMESTEP,
    STORE_TYPE,
    SUPERVISION_FORMAT,
    TIMESTEP_ARRAYS,
    VIEW_ARRAYS,
    SupervisionSample,
    SupervisionStore,
)
from .write import DuplicateSubjectError

__all__ = ["SupervisionStoreConfig", "SupervisionStoreWriter"]


@dataclass
class SupervisionStoreConfig:
    """Layout of a supervision store, fixed at creation (saved in the group attributes).

    Attributes:
        image_size: ``(H, W)`` of every view (default 802 x 550, a quarter of NeRSemble's).
        crop_size: ``(h, w)`` of the conditioning crops (the token store's portrait size).
        crops_per_identity: crops stored per identity.
        num_vertices: FLAME vertices (``static_offset`` rows; 5143 with teeth).
        views_per_shard: views per shard of ``rgb`` / ``mask`` (one chunk per view).
        rows_per_shard: rows per chunk of the per-timestep and per-camera arrays.
        canonical: the canonical FLAME parameters of the matching token store (recorded).

    Raises:
        ConfigError: a non-positive size or count.
    """

    image_size: tuple[int, int] = (802, 550)
    crop_size: tuple[int, int] = (PORTRAIT_SIZE, PORTRAIT_SIZE)
    crops_per_identity: int = 4
    num_vertices: int = 5143
    views_per_shard: int = 64
    rows_per_shard: int = 256
    canonical: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size, self.crop_size = tuple(self.image_size), tuple(self.crop_size)
        if len(self.image_size) != 2 or len(self.crop_size) != 2 or min(self.image_size + self.crop_size) < 1:
            raise ConfigError(f"image_size {self.image_size} and crop_size {self.crop_size} must be positive (H, W)")
        if min(self.crops_per_identity, self.views_per_shard, self.rows_per_shard, self.num_vertices) < 1:
            raise ConfigError("crops_per_identity, views_per_shard, rows_per_shard and num_vertices must be >= 1")


def _compressor() -> BloscCodec:
    # images compress somewhat with lz4 + byte shuffle; decompression speed matters more
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _rows(sample: SupervisionSample, name: str) -> np.ndarray:
    """The rows ``sample`` adds to the flat array ``name``."""
    K, C = sample.num_timesteps, sample.num_cameras
    if name == "rgb":
        return sample.rgb.reshape(K * C, *sample.rgb.shape[2:])
    if name == "mask":
        return sample.mask.reshape(K * C, *sample.mask.shape[2:])
    if name in PER_TIMESTEP:
        a = np.asarray(getattr(sample.params, name), np.float32)
        d = PER_TIMESTEP[name]
        return np.pad(a, ((0, 0), (0, d - a.shape[1])))[:, :d]
    if name == "timestep_id":
        tid = sample.params.timestep_id
        return np.asarray(tid if tid is not None else [f"{t:05d}" for t in range(K)]).astype(str)
    if name == "serial":
        return np.asarray(sample.serials).astype(str)
    return np.asarray(getattr(sample, name), np.float64)


class SupervisionStoreWriter(AppendOnlyWriter):
    """Create or append to a supervision store, safely against a crash at any point
    (:meth:`create`, :meth:`open` recovering an interrupted append, :meth:`open_or_create`,
    :meth:`append`). One writer at a time per store.

    Attributes:
        num_samples: committed identities; subjects: their ids.
    """

    reader_cls = SupervisionStore

    @classmethod
    def create(cls, path_or_url: str | Path, config: SupervisionStoreConfig, overwrite: bool = False,
               fsync: bool | None = None) -> SupervisionStoreWriter:
        """Create an empty store atomically (replacing an interrupted creation).

        Raises:
            StoreError: a store already exists there and ``overwrite`` is False, or the path
                holds something that is no store.
        """
        return cls._create(path_or_url, config, overwrite, fsync)

    @classmethod
    def _define(cls, g: zarr.Group, c: SupervisionStoreConfig) -> None:
        H, W = c.image_size
        h, w = c.crop_size
        n, vs, rs = c.crops_per_identity, c.views_per_shard, c.rows_per_shard
        g.update_attributes({**asdict(c), "format_version": SUPERVISION_FORMAT, "store_type": STORE_TYPE,
                             "created_by": "pointillist", "image_size": [H, W], "crop_size": [h, w],
                             "view_order": "identity, then timestep, then camera",
                             "frames": "OpenCV world-to-camera (metres), K in pixels for the stored image size"})

        def mk(name, shape, dtype, chunks, shards=None, fill=0):
            if dtype is str:
                return g.create_array(name, shape=shape, dtype=str, chunks=chunks)
            return g.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards, fill_value=fill,
                                  compressors=_compressor())

        mk("rgb", (0, H, W, 3), "uint8", (1, H, W, 3), (vs, H, W, 3))
        mk("mask", (0, H, W), "uint8", (1, H, W), (vs, H, W))
        mk("intrinsics", (0, 3, 3), "float64", (rs, 3, 3))
        mk("world_to_cam", (0, 4, 4), "float64", (rs, 4, 4))
        mk("serial", (0,), str, (rs,))
        for k, d in PER_TIMESTEP.items():
            mk(k, (0, d), "float32", (rs, d))
        mk("timestep_id", (0,), str, (rs,))
        mk("subject_id", (0,), str, (1 << 12,))
        mk("counts", (0, 2), "int32", (1 << 12, 2))
        mk("shape", (0, 300), "float32", (256, 300))
        mk("static_offset", (0, c.num_vertices, 3), "float32", (1, c.num_vertices, 3))
        mk("crops", (0, n, h, w, 3), "uint8", (1, n, h, w, 3))
        mk("crop_source", (0, n, 2), "int32", (1 << 12, n, 2))
        for name in ("timestep_offsets", "camera_offsets"):
            mk(name, (1,), "int64", (1 << 20,), fill=-1)
            g[name][:] = np.zeros(1, np.int64)
        mk("offsets", (1,), "int64", (1 << 20,), fill=-1)

    @classmethod
    def _prune_extra(cls, extra: dict, num_samples: int) -> None:
        extra["samples"] = extra.get("samples", [])[:num_samples]

    def _after_recover(self, reader: SupervisionStore) -> None:
        a = reader.attrs
        self.image_size, self.crop_size = tuple(a["image_size"]), tuple(a["crop_size"])
        self.num_crops, self.num_vertices = int(a["crops_per_identity"]), int(a["num_vertices"])
        self.ends = [int(reader.offsets[-1]), int(reader.timestep_offsets[-1]), int(reader.camera_offsets[-1])]
        self.subjects = set(reader.subject_ids())

    def _check(self, batch: list[SupervisionSample]) -> None:
        seen: set[str] = set()
        for s in batch:
            if s.subject_id in self.subjects or s.subject_id in seen:
                raise DuplicateSubjectError(f"{self.root}: subject '{s.subject_id}' is already in the store or batch")
            seen.add(s.subject_id)
            s.validate(self.root)
            if s.image_size != self.image_size:
                raise StoreError(f"{self.root}: subject '{s.subject_id}' has {s.image_size} images, the store "
                                 f"{self.image_size} (H, W)")
            if s.crops.shape != (self.num_crops, *self.crop_size, 3):
                raise StoreError(f"{self.root}: subject '{s.subject_id}' has crops {s.crops.shape}, the store "
                                 f"({self.num_crops}, {self.crop_size[0]}, {self.crop_size[1]}, 3)")
            so = s.params.static_offset
            if so is not None and so.shape[1] != self.num_vertices:
                raise StoreError(f"{self.root}: subject '{s.subject_id}' static_offset has {so.shape[1]} vertices, "
                                 f"the store {self.num_vertices}")

    def append(self, batch: list[SupervisionSample], skip_existing: bool = False) -> int:
        """Commit a batch: whole new shards, per-identity rows, manifest, then the offsets.

        Args:
            batch: identities to add.
            skip_existing: silently skip subjects already committed (resumed runs).

        Returns:
            The number of identities written.

        Raises:
            DuplicateSubjectError, StoreError: bad input; nothing is committed.
        """
        if skip_existing:
            batch = [s for s in batch if s.subject_id not in self.subjects]
        if not batch:
            return 0
        self._check(batch)
        S, B, V = self.num_samples, len(batch), self.num_vertices
        flat: dict[str, tuple[int, np.ndarray]] = {}
        starts = np.zeros((3, B + 1), np.int64)
        for col, names, count in ((0, VIEW_ARRAYS, lambda s: s.num_timesteps * s.num_cameras),
                                  (1, TIMESTEP_ARRAYS, lambda s: s.num_timesteps),
                                  (2, CAMERA_ARRAYS, lambda s: s.num_cameras)):
            starts[col] = self.ends[col] + np.concatenate([[0], np.cumsum([count(s) for s in batch])])
            for name in names:
                flat[name] = (col, np.concatenate([_rows(s, name) for s in batch]))
        ident = {
            "subject_id": np.asarray([s.subject_id for s in batch]),
            "counts": np.asarray([[s.num_timesteps, s.num_cameras] for s in batch], np.int32),
            "shape": np.stack([np.pad(np.asarray(s.params.shape, np.float32), (0, 300))[:300] for s in batch]),
            "static_offset": np.stack([np.zeros((V, 3), np.float32) if s.params.static_offset is None
                                       else np.asarray(s.params.static_offset, np.float32).reshape(V, 3) for s in batch]),
            "crops": np.stack([s.crops for s in batch]),
            "crop_source": np.stack([np.asarray(s.crop_source, np.int32) for s in batch]),
        }
        entries = [{"subject_id": s.subject_id, "timesteps": s.num_timesteps, "cameras": s.num_cameras} for s in batch]
        with self.transaction({"samples": self.manifest.extra.get("samples", [])[:S] + entries}):
            g = self.arrays
            new_ends = list(self.ends)
            for name, (col, rows) in flat.items():  # each flat array padded to its shard boundary
                za = g[name]
                start = self.ends[col]
                n = za.shards[0] if za.shards else za.chunks[0]
                end = -(-(start + len(rows)) // n) * n
                pad = np.full((end - start - len(rows),) + rows.shape[1:], "" if rows.dtype.kind == "U" else 0,
                              dtype=rows.dtype)
                za.resize((end,) + za.shape[1:])
                za[start:end] = np.concatenate([rows, pad])
                new_ends[col] = end
            for name, vals in ident.items():
                za = g[name]
                za.resize((S + B,) + za.shape[1:])
                za[S:S + B] = vals
            for col, name in ((1, "timestep_offsets"), (2, "camera_offsets"), (0, "offsets")):
                vals = starts[col].copy()
                vals[-1] = new_ends[col]  # the next batch starts at the shard boundary
                za = g[name]
                za.resize((S + B + 1,))
                za[S + 1:S + B + 1] = vals[1:]  # entry S is already committed
        return B
