"""Writing supervision stores: whole new shards only, manifest, offsets last
(see :mod:`pointillist_data.supervision` for the layout)."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from .store import MANIFEST, StoreError, open_group, sha256_bytes, shard_keys
from .store_write import DuplicateSubjectError
from .supervision import (
    CAMERA_ARRAYS,
    IDENTITY_ARRAYS,
    PER_TIMESTEP,
    SUPERVISION_FORMAT,
    SUPERVISION_KIND,
    TIMESTEP_ARRAYS,
    VIEW_ARRAYS,
    SupervisionSample,
    SupervisionStore,
)

__all__ = ["SupervisionStoreConfig", "SupervisionStoreWriter"]


@dataclass
class SupervisionStoreConfig:
    """Layout of a supervision store, fixed at creation (saved in the group attributes).

    Attributes:
        image_size: ``(H, W)`` of every view (default 802 x 550, a quarter of NeRSemble's).
        crop_size: ``(h, w)`` of the conditioning crops.
        crops_per_identity: crops stored per identity.
        num_vertices: FLAME vertices (``static_offset`` rows; 5143 with teeth).
        views_per_shard: views per shard of ``rgb`` / ``mask`` (one chunk per view).
        rows_per_shard: rows per chunk of the per-timestep and per-camera arrays.
        canonical: the canonical FLAME parameters of the matching token store (recorded).
    """

    image_size: tuple[int, int] = (802, 550)
    crop_size: tuple[int, int] = (128, 128)
    crops_per_identity: int = 4
    num_vertices: int = 5143
    views_per_shard: int = 64
    rows_per_shard: int = 256
    canonical: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size, self.crop_size = tuple(self.image_size), tuple(self.crop_size)
        if min(self.image_size) < 1 or min(self.crop_size) < 1 or len(self.image_size) != 2:
            raise ValueError(f"image_size {self.image_size} and crop_size {self.crop_size} must be positive (H, W)")
        if self.crops_per_identity < 1 or self.views_per_shard < 1 or self.rows_per_shard < 1:
            raise ValueError("crops_per_identity, views_per_shard and rows_per_shard must be >= 1")


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


class SupervisionStoreWriter:
    """Create or append to a supervision store (:meth:`create`, :meth:`open`, :meth:`append`)."""

    def __init__(self, group: zarr.Group, fs, root: str) -> None:
        self.group, self.fs, self.root = group, fs, root.rstrip("/")
        a = dict(group.attrs)
        self.image_size, self.crop_size = tuple(a["image_size"]), tuple(a["crop_size"])
        self.num_crops, self.num_vertices = int(a["crops_per_identity"]), int(a["num_vertices"])
        self._recover()

    @classmethod
    def create(cls, path_or_url: str | Path, config: SupervisionStoreConfig,
               overwrite: bool = False) -> SupervisionStoreWriter:
        """Create an empty store.

        Raises:
            StoreError: a store already exists there and ``overwrite`` is False.
        """
        try:
            g, fs, root = open_group(path_or_url, "w" if overwrite else "w-")
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as e:
            raise StoreError(f"{path_or_url}: a store already exists (use overwrite or append)") from e
        c = config
        H, W = c.image_size
        h, w = c.crop_size
        n, vs, rs = c.crops_per_identity, c.views_per_shard, c.rows_per_shard
        g.attrs.update({"kind": SUPERVISION_KIND, "format_version": SUPERVISION_FORMAT, "created_by": "pointillist",
                        **asdict(c), "image_size": [H, W], "crop_size": [h, w],
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
        mk("subject_id", (0,), str, (1,))
        mk("counts", (0, 2), "int32", (1, 2))
        mk("shape", (0, 300), "float32", (1, 300))
        mk("static_offset", (0, c.num_vertices, 3), "float32", (1, c.num_vertices, 3))
        mk("crops", (0, n, h, w, 3), "uint8", (1, n, h, w, 3))
        mk("crop_source", (0, n, 2), "int32", (1, n, 2))
        mk("offsets", (1, 3), "int64", (1, 3), fill=-1)
        fs.pipe_file(f"{root.rstrip('/')}/{MANIFEST}", json.dumps(
            {"kind": SUPERVISION_KIND, "format_version": SUPERVISION_FORMAT, "shards": {}, "samples": []},
            indent=1).encode())
        g["offsets"][:] = np.zeros((1, 3), np.int64)  # offsets last: the empty store is now valid
        _consolidate(g)
        return cls(g, fs, root)

    @classmethod
    def open(cls, path_or_url: str | Path) -> SupervisionStoreWriter:
        """Open an existing store for appending (dropping what an interrupted batch left)."""
        g, fs, root = open_group(path_or_url, "r+")
        if dict(g.attrs).get("kind") != SUPERVISION_KIND:
            raise StoreError(f"{path_or_url}: not a pointillist supervision store")
        return cls(g, fs, root)

    def _recover(self) -> None:
        st = SupervisionStore(self.group, self.fs, self.root, verify=False)
        self.num_samples = len(st)
        self.ends = [int(x) for x in st.offsets[-1]]  # view, timestep, camera
        self.subjects = set(st.subject_ids())
        for names, end in ((VIEW_ARRAYS, self.ends[0]), (TIMESTEP_ARRAYS, self.ends[1]), (CAMERA_ARRAYS, self.ends[2]),
                           (IDENTITY_ARRAYS, self.num_samples)):
            for name in names:
                za = self.group[name]
                za.resize((end,) + za.shape[1:])
        self.group["offsets"].resize((self.num_samples + 1, 3))

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

    def _append_rows(self, name: str, start: int, rows: np.ndarray) -> tuple[int, list[str]]:
        """Write ``rows`` at ``start`` padded to the array's shard boundary; ``(new end, keys)``."""
        za = self.group[name]
        shard = za.shards[0] if za.shards else za.chunks[0]
        end = -(-(start + len(rows)) // shard) * shard
        pad = end - start - len(rows)
        if pad:
            fill = np.full((pad,) + rows.shape[1:], "" if rows.dtype.kind == "U" else 0, dtype=rows.dtype)
            rows = np.concatenate([rows, fill])
        za.resize((end,) + za.shape[1:])
        za[start:end] = rows
        return end, shard_keys(za, start, end)

    def append(self, batch: list[SupervisionSample], skip_existing: bool = False) -> int:
        """Commit a batch: new shards, per-identity rows, manifest, then the offsets.

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
        # every chunk is written, even one equal to the fill value, so that every shard the
        # manifest lists exists (an all-zero static offset or eye pose is common)
        with zarr.config.set({"array.write_empty_chunks": True}):
            self._append(batch)
        return len(batch)

    def _append(self, batch: list[SupervisionSample]) -> None:
        keys: list[str] = []
        starts = np.zeros((len(batch) + 1, 3), np.int64)
        new_ends = list(self.ends)
        for col, names, count in ((0, VIEW_ARRAYS, lambda s: s.num_timesteps * s.num_cameras),
                                  (1, TIMESTEP_ARRAYS, lambda s: s.num_timesteps),
                                  (2, CAMERA_ARRAYS, lambda s: s.num_cameras)):
            starts[:, col] = self.ends[col] + np.concatenate([[0], np.cumsum([count(s) for s in batch])])
            for name in names:
                rows = np.concatenate([_rows(s, name) for s in batch])
                new_ends[col], k = self._append_rows(name, self.ends[col], rows)
                keys += k
        S, B = self.num_samples, len(batch)
        V = self.num_vertices
        ident = {
            "subject_id": np.asarray([s.subject_id for s in batch]),
            "counts": np.asarray([[s.num_timesteps, s.num_cameras] for s in batch], np.int32),
            "shape": np.stack([np.pad(np.asarray(s.params.shape, np.float32), (0, 300))[:300] for s in batch]),
            "static_offset": np.stack([np.zeros((V, 3), np.float32) if s.params.static_offset is None
                                       else np.asarray(s.params.static_offset, np.float32).reshape(V, 3) for s in batch]),
            "crops": np.stack([s.crops for s in batch]),
            "crop_source": np.stack([np.asarray(s.crop_source, np.int32) for s in batch]),
        }
        for name, vals in ident.items():
            za = self.group[name]
            za.resize((S + B,) + za.shape[1:])
            za[S:S + B] = vals
            keys += shard_keys(za, S, S + B)
        self._write_manifest(keys, batch)
        starts[-1] = new_ends  # the next batch starts at the shard boundaries
        za = self.group["offsets"]
        za.resize((S + B + 1, 3))
        za[S + 1:S + B + 1] = starts[1:]  # offsets[S] is already committed
        self.ends, self.num_samples = new_ends, S + B
        self.subjects.update(s.subject_id for s in batch)
        _consolidate(self.group)

    def _write_manifest(self, keys: list[str], batch: list[SupervisionSample]) -> None:
        path = f"{self.root}/{MANIFEST}"
        m = json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else {"shards": {}, "samples": []}
        for k in keys:
            data = self.fs.cat_file(f"{self.root}/{k}")
            m["shards"][k] = {"sha256": sha256_bytes(data), "bytes": len(data)}
        m["samples"] = m.get("samples", [])[: self.num_samples] + [
            {"subject_id": s.subject_id, "timesteps": s.num_timesteps, "cameras": s.num_cameras} for s in batch]
        m.update(kind=SUPERVISION_KIND, format_version=SUPERVISION_FORMAT)
        tmp = f"{path}.tmp"
        self.fs.pipe_file(tmp, json.dumps(m, indent=1).encode())
        self.fs.mv(tmp, path)


def _consolidate(g: zarr.Group) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(g.store)
