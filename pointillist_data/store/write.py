"""Writing token stores: whole shards only, offsets last, crash-safe (the protocol of
:mod:`pointillist_data.store.commit`; the layout of :mod:`pointillist_data.store.token_store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..fileio import atomic_savez
from ..portrait import PORTRAIT_SIZE
from ..tokens import DEFAULT_BOX, FRAME, QuantBox, Vocabulary, check_grammar
from .card import refresh_documents
from .commit import AppendOnlyWriter
from .token_store import FORMAT_VERSION, POINT_ARRAYS, STORE_TYPE, StoreError, TokenStore

__all__ = ["Sample", "StoreConfig", "TokenStoreWriter", "DuplicateSubjectError"]


class DuplicateSubjectError(StoreError):
    """A subject id is already in the store or appears twice in one batch."""


@dataclass
class Sample:
    """One identity to store; per-point arrays are in token order (see ``tokens.encode``).

    Attributes:
        subject_id: unique id (for NeRSemble: the participant id, ``"017"``).
        tokens: ``(4N + 8,)`` uint16.
        points, binding, rgb, opacity, scale, rotation: per-point arrays (N rows).
        flame_shape: ``(300,)`` identity coefficients.
        image: ``(H, W, 3)`` uint8 conditioning crop.
        sequences: the capture sequences the avatar was fitted on (listed per sample in the
            store's ``manifest.json``; optional, ``[]`` when unknown).
    """

    subject_id: str
    tokens: np.ndarray
    points: np.ndarray
    binding: np.ndarray
    rgb: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    flame_shape: np.ndarray
    image: np.ndarray
    sequences: list[str] = field(default_factory=list)

    @property
    def num_points(self) -> int:
        return int(len(self.binding))

    def save(self, path: str | Path) -> Path:
        """Write the sample as an npz (the output of ``pointillist tokenize``), atomically."""
        return atomic_savez(path, **{k: np.asarray(getattr(self, k)) for k in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: str | Path) -> Sample:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: tokenized sample not found")
        with np.load(path) as z:
            missing = [k for k in cls.__dataclass_fields__ if k not in z.files and k not in _OPTIONAL]
            if missing:
                raise StoreError(f"{path}: missing keys {missing}")
            d = {k: z[k] for k in cls.__dataclass_fields__ if k in z.files}
        d["subject_id"] = str(d["subject_id"])
        d["sequences"] = [str(s) for s in d.get("sequences", [])]
        return cls(**d)


_OPTIONAL = ("sequences",)


@dataclass
class StoreConfig:
    """Store layout settings, fixed at creation (saved in the group attributes).

    Attributes:
        box: quantisation box of the whole dataset.
        vocab: vocabulary (1024 bins, 10144 faces for FLAME with teeth).
        canonical: the canonical FLAME parameters the point clouds were computed at.
        image_size: ``(H, W)`` of the conditioning crops (default
            :data:`~pointillist_data.portrait.PORTRAIT_SIZE` square; stores written with
            another size, e.g. the 128 px of format 1 stores, read as they are).
        tokens_per_shard: tokens per shard of ``tokens`` (a sample must fit in one batch).
        tokens_per_chunk: tokens per compressed chunk inside a shard.
        points_per_shard: rows per shard of the per-point arrays.
        points_per_chunk: rows per chunk of the per-point arrays.
    """

    box: QuantBox = DEFAULT_BOX
    vocab: Vocabulary = field(default_factory=Vocabulary)
    canonical: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] = (PORTRAIT_SIZE, PORTRAIT_SIZE)
    tokens_per_shard: int = 1 << 21
    tokens_per_chunk: int = 1 << 19
    points_per_shard: int = 1 << 19
    points_per_chunk: int = 1 << 15

    def __post_init__(self) -> None:
        if self.tokens_per_shard % self.tokens_per_chunk or self.points_per_shard % self.points_per_chunk:
            raise ValueError("shard sizes must be multiples of chunk sizes")


def _compressor() -> BloscCodec:
    # lz4 + bitshuffle: token ids are near-random 10-14 bit values that compress little, so
    # decompression speed (a full scan at > 1 GB/s) matters more than ratio.
    return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")


def _image_compressor() -> BloscCodec:
    # portraits (512 px by default, 768 KiB raw) are read once per window: zstd with byte
    # shuffle stores a synthetic-capture portrait in 130 KiB where the tokens' lz4 takes 267 KiB
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


class TokenStoreWriter(AppendOnlyWriter):
    """Create or append to a token store, safely against a crash at any point.

    Use :meth:`create` for a new store, :meth:`open` to append (recovering from an
    interrupted append), or :meth:`open_or_create`; :meth:`append` commits one batch of
    samples atomically for readers. One writer at a time per store.

    Attributes:
        num_samples: committed samples; subjects: their ids.
    """

    reader_cls = TokenStore

    @classmethod
    def create(cls, path_or_url: str | Path, config: StoreConfig, overwrite: bool = False,
               fsync: bool | None = None) -> TokenStoreWriter:
        """Create an empty store atomically (replacing an interrupted creation).

        Args:
            fsync: flush every write to the disk before the next depends on it (power-loss
                safety); ``None``: the ``POINTILLIST_FSYNC`` setting, on unless ``0``.

        Raises:
            StoreError: a store already exists there and ``overwrite`` is False, or the path
                holds something that is no store.
        """
        return cls._create(path_or_url, config, overwrite, fsync)

    @classmethod
    def _define(cls, g: zarr.Group, c: StoreConfig) -> None:
        g.update_attributes({  # one metadata write (attrs.update writes once per key)
            "format_version": FORMAT_VERSION, "store_type": STORE_TYPE, "vocabulary": c.vocab.to_dict(),
            "quant_box": c.box.to_dict(), "canonical": c.canonical, "created_by": "pointillist",
            "token_order": "yzx, then binding",
            "shards": {"tokens": c.tokens_per_shard, "points": c.points_per_shard},
            "point_attributes": {"points": "canonical global position (m)", "binding": "FLAME face index",
                                 "rgb": "colour", "opacity": "activated", "scale": "global, activated (m)",
                                 "rotation": "global wxyz"},
        })
        mk = lambda name, shape, dtype, chunks, shards=None, fill=0, codec=None: g.create_array(  # noqa: E731
            name, shape=shape, dtype=dtype, chunks=chunks, shards=shards, fill_value=fill,
            compressors=codec or _compressor())
        mk("tokens", (0,), "uint16", (c.tokens_per_chunk,), (c.tokens_per_shard,), c.vocab.pad)
        for name, d in POINT_ARRAYS.items():
            shape, ch, sh = ((0, d), (c.points_per_chunk, d), (c.points_per_shard, d)) if d else \
                ((0,), (c.points_per_chunk,), (c.points_per_shard,))
            mk(name, shape, "int32" if name == "binding" else "float32", ch, sh)
        mk("offsets", (1,), "int64", (1 << 20,), fill=-1)
        mk("point_offsets", (1,), "int64", (1 << 20,), fill=-1)
        g["point_offsets"][:] = np.zeros(1, np.int64)
        mk("point_count", (0,), "int32", (1 << 16,))
        g.create_array("subject_id", shape=(0,), dtype=str, chunks=(1 << 12,))
        mk("flame_shape", (0, 300), "float32", (1024, 300))
        mk("image", (0, *c.image_size, 3), "uint8", (1, *c.image_size, 3), codec=_image_compressor())

    @classmethod
    def _prune_extra(cls, extra: dict, num_samples: int) -> None:
        extra["samples"] = extra.get("samples", [])[:num_samples]

    def _after_recover(self, reader: TokenStore) -> None:
        a = reader.attrs
        self.vocab = Vocabulary(a["vocabulary"]["num_bins"], a["vocabulary"]["num_faces"])
        self.box = QuantBox.from_dict(a["quant_box"])
        self.shards = a["shards"]
        self.image_shape = tuple(self.arrays["image"].shape[1:])
        self.token_end = int(reader.offsets[-1])
        self.point_end = int(reader.point_offsets[-1])
        self.subjects = set(reader.subject_ids())

    def _check(self, batch: list[Sample]) -> None:
        seen: set[str] = set()
        for s in batch:
            if s.subject_id in self.subjects or s.subject_id in seen:
                raise DuplicateSubjectError(f"{self.root}: subject '{s.subject_id}' is already in the store or batch")
            seen.add(s.subject_id)
            if s.num_points == 0:
                raise StoreError(f"subject '{s.subject_id}': empty point cloud")
            check_grammar(s.tokens, self.vocab, check_order=True)
            if len(s.tokens) != 4 * s.num_points + 2 * FRAME:
                raise StoreError(f"subject '{s.subject_id}': {len(s.tokens)} tokens for {s.num_points} points")
            for name, d in POINT_ARRAYS.items():
                a = np.asarray(getattr(s, name))
                if a.shape != ((s.num_points, d) if d else (s.num_points,)) or not np.all(np.isfinite(a)):
                    raise StoreError(f"subject '{s.subject_id}': per-point array '{name}' has shape {a.shape} "
                                     "or non-finite values")
            if np.asarray(s.image).shape != self.image_shape:
                raise StoreError(f"subject '{s.subject_id}': image of shape {np.asarray(s.image).shape}, the store "
                                 f"holds {self.image_shape}")
            if len(s.tokens) > self.shards["tokens"] * 64:
                raise StoreError(f"subject '{s.subject_id}': sequence of {len(s.tokens)} tokens is implausibly long")

    def append(self, batch: list[Sample], skip_existing: bool = False,
               annotations: dict[str, dict[str, Any]] | None = None) -> int:
        """Commit a batch: whole new shards, per-sample rows, manifest, then offsets; then
        regenerate the dataset card (:func:`pointillist_data.store.card.refresh_documents`).

        Args:
            batch: samples to add.
            skip_existing: silently skip subjects already committed (for resumed runs).
            annotations: ``{subject_id: {"split": ..., "provenance": {...}}}`` added to the
                samples' manifest entries (:mod:`pointillist_data.provenance`).

        Returns:
            The number of samples written.

        Raises:
            DuplicateSubjectError, StoreError: bad input; nothing is committed.
        """
        if skip_existing:
            batch = [s for s in batch if s.subject_id not in self.subjects]
        if not batch:
            refresh_documents(self)  # a re-run after a crash during the last card write completes it
            return 0
        self._check(batch)
        # Rows are packed: each batch starts where the last committed sample ends, so that
        # offsets[i]:offsets[i + 1] is exactly sample i (format 1.2). The shard that holds the
        # end of the committed rows is rewritten whole and atomically, like a per-sample chunk.
        tok = np.concatenate([s.tokens.astype(np.uint16) for s in batch])
        t_starts = self.token_end + np.concatenate([[0], np.cumsum([len(s.tokens) for s in batch])])
        new_tok_end = int(t_starts[-1])
        npts = [s.num_points for s in batch]
        p_starts = self.point_end + np.concatenate([[0], np.cumsum(npts)])
        new_pt_end = int(p_starts[-1])
        S, B = self.num_samples, len(batch)
        rows = {"point_count": np.asarray(npts, np.int32),
                "flame_shape": np.stack([np.asarray(s.flame_shape, np.float32)[:300] for s in batch]),
                "image": np.stack([np.asarray(s.image, np.uint8) for s in batch]),
                "subject_id": np.asarray([s.subject_id for s in batch])}
        entries = [{"subject_id": s.subject_id, "points": s.num_points, "tokens": len(s.tokens),
                    **({"sequences": list(s.sequences)} if s.sequences else {}),
                    **(annotations or {}).get(s.subject_id, {})} for s in batch]
        with self.transaction({"samples": self.manifest.extra.get("samples", [])[:S] + entries}):
            g = self.arrays
            g["tokens"].resize((new_tok_end,))
            g["tokens"][self.token_end:new_tok_end] = tok
            for name, d in POINT_ARRAYS.items():
                arr = np.concatenate([np.asarray(getattr(s, name)) for s in batch])
                za = g[name]
                za.resize((new_pt_end, d) if d else (new_pt_end,))
                za[self.point_end:new_pt_end] = arr.astype(za.dtype)
            for name, vals in rows.items():
                za = g[name]
                za.resize((S + B,) + za.shape[1:])
                za[S:S + B] = vals
            for name, starts in (("point_offsets", p_starts), ("offsets", t_starts)):
                vals = np.asarray(starts, np.int64)
                za = g[name]
                za.resize((S + B + 1,))
                za[S + 1:S + B + 1] = vals[1:]  # entry S is already committed
        refresh_documents(self)
        return B
