"""Map-style PyTorch datasets of token-store samples, filtered views, and a collate for ragged
point clouds.

``SampleDataset(store)`` is a :class:`torch.utils.data.Dataset`: ``ds[k]`` reads one sample
lazily through zarr (its token range, its per-point rows, its conditioning image; nothing else
is held in memory), so DataLoader workers stay small however many there are. Each worker
process opens the store itself (an fsspec / S3 client is not safe to share across a fork).
``select(split=..., where=...)`` returns a view over the samples whose manifest entry matches.

Example::

    ds = SampleDataset("s3://bucket/store.zarr", split="train").select(where="psnr >= 28")
    dl = DataLoader(ds, batch_size=8, num_workers=4, collate_fn=collate)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from .query import select_samples
from .token_store import POINT_ARRAYS, TokenStore

__all__ = ["SampleDataset", "collate", "StoreHandle", "store_url", "SAMPLE_FIELDS"]

SAMPLE_FIELDS = ("tokens", *POINT_ARRAYS, "flame_shape", "image")


def store_url(store: TokenStore) -> str:
    """The path or URL an open store can be opened again from (in another process)."""
    proto = store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]
    if proto in ("file", "local"):
        return store.root
    return store.fs.unstrip_protocol(store.root)


class StoreHandle:
    """A picklable reference to a store, opened lazily once per process.

    Args:
        store: an open :class:`TokenStore` (used as is in the process that opened it) or a
            path / URL.
        verify: checksum-verify reads (see :class:`TokenStore`).
    """

    def __init__(self, store: TokenStore | str | os.PathLike, verify: bool = True) -> None:
        if isinstance(store, TokenStore):
            self.url, self.verify = store_url(store), store.verify
            self._store, self._pid = store, os.getpid()
        else:
            self.url, self.verify = str(store), verify
            self._store, self._pid = None, None

    def get(self) -> TokenStore:
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid = TokenStore.open(self.url, verify=self.verify), os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "verify": self.verify, "_store": None, "_pid": None}


class SampleDataset(Dataset):
    """The samples of a token store as a map-style dataset (optionally a filtered view).

    Args:
        store: an open :class:`TokenStore`, or a path / URL (``s3://``, ``https://``...).
        split: keep samples whose manifest ``split`` is this (``train``, ``test``...;
            ``None`` or ``"all"``: every split).
        where: a filter over the per-sample fields (:data:`pointillist_data.store.query.FILTER_FIELDS`,
            the same language and fields as ``pointillist inspect --where``), e.g.
            ``"psnr >= 28 and landmark_iod_pct < 5"``.
        fields: the arrays each item holds (default: all of :data:`SAMPLE_FIELDS`); fewer
            fields read less.
        indices: explicit store indices (a view's; default: every committed sample).
        verify: checksum-verify reads.

    Items are dicts: ``index`` and ``subject_id``; ``tokens (4N + 8,)`` int64; per-point
    ``points (N, 3)``, ``binding (N,)`` int64, ``rgb (N, 3)``, ``opacity (N,)``,
    ``scale (N, 3)``, ``rotation (N, 4)`` float32 (canonical FLAME frame, metres);
    ``flame_shape (300,)`` float32; ``image (H, W, 3)`` uint8.

    Raises:
        InputError: a bad ``where`` or an unknown field (the message names ``where=``).
    """

    def __init__(self, store: TokenStore | str | os.PathLike, split: str | None = None, where: str | None = None,
                 fields: Sequence[str] | None = None, indices: Sequence[int] | None = None, verify: bool = True) -> None:
        self.handle = store if isinstance(store, StoreHandle) else StoreHandle(store, verify)
        st = self.handle.get()
        self.fields = tuple(fields) if fields is not None else SAMPLE_FIELDS
        bad = [f for f in self.fields if f not in SAMPLE_FIELDS]
        if bad:
            raise InputError("fields", f"unknown sample field(s) {bad} (known: {', '.join(SAMPLE_FIELDS)})")
        self.table = st.quality_table()
        rows = select_samples(st, split, where, "where=", indices=indices)
        self.indices = np.asarray([r["index"] for r in rows], dtype=np.int64)

    def select(self, split: str | None = None, where: str | None = None,
               indices: Sequence[int] | None = None) -> SampleDataset:
        """A view of this dataset's samples filtered further (``indices``: positions in this view)."""
        base = self.indices if indices is None else self.indices[np.asarray(indices, dtype=np.int64)]
        return SampleDataset(self.handle, split, where, self.fields, base)

    @property
    def pad(self) -> int:
        """The store's PAD token (for :func:`collate`)."""
        return int(self.handle.get().vocab.pad)

    @property
    def subject_ids(self) -> list[str]:
        return [str(self.table[i]["subject_id"]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"item {k} out of range for a dataset of {len(self)}")
        st = self.handle.get()
        i = int(self.indices[k])
        out: dict[str, Any] = {"index": i, "subject_id": str(self.table[i]["subject_id"])}
        if "tokens" in self.fields:
            out["tokens"] = torch.from_numpy(st.tokens(i).astype(np.int64))
        s, n = int(st.point_offsets[i]), int(st.point_count[i])
        for name in POINT_ARRAYS:
            if name in self.fields:
                a = st.read(name, s, s + n)
                out[name] = torch.from_numpy(a.astype(np.int64) if name == "binding" else a)
        for name in ("flame_shape", "image"):
            if name in self.fields:
                out[name] = torch.from_numpy(st.read(name, i, i + 1)[0])
        return out


def collate(batch: list[dict[str, Any]], pad_token: int | None = None) -> dict[str, Any]:
    """Stack items of :class:`SampleDataset` whose clouds differ in size.

    Token sequences are right-padded with ``pad_token`` (default: PAD of the default
    vocabulary, 1024 bins and 10144 faces; for another store pass ``pad_token=ds.pad``,
    e.g. through ``functools.partial``) into ``tokens (B, Tmax)`` with
    ``token_mask (B, Tmax)`` bool (True on real tokens); per-point arrays are zero-padded to
    ``(B, Nmax, ...)`` with ``point_mask (B, Nmax)`` bool and ``point_count (B,)`` int64;
    ``flame_shape (B, 300)`` and ``image (B, H, W, 3)`` are stacked; ``index (B,)`` int64 and
    ``subject_id`` (list) are kept.
    """
    from ..tokens import Vocabulary

    out: dict[str, Any] = {"index": torch.as_tensor([b["index"] for b in batch], dtype=torch.int64),
                           "subject_id": [b["subject_id"] for b in batch]}
    B = len(batch)
    if "tokens" in batch[0]:
        pad = Vocabulary().pad if pad_token is None else int(pad_token)
        lens = [len(b["tokens"]) for b in batch]
        toks = torch.full((B, max(lens)), pad, dtype=torch.int64)
        mask = torch.zeros((B, max(lens)), dtype=torch.bool)
        for j, b in enumerate(batch):
            toks[j, : lens[j]] = b["tokens"]
            mask[j, : lens[j]] = True
        out.update(tokens=toks, token_mask=mask)
    present = [n for n in POINT_ARRAYS if n in batch[0]]
    if present:
        counts = [len(batch[j][present[0]]) for j in range(B)]
        N = max(counts)
        out["point_count"] = torch.as_tensor(counts, dtype=torch.int64)
        pm = torch.zeros((B, N), dtype=torch.bool)
        for j, n in enumerate(counts):
            pm[j, :n] = True
        out["point_mask"] = pm
        for name in present:
            first = batch[0][name]
            arr = torch.zeros((B, N, *first.shape[1:]), dtype=first.dtype)
            for j, b in enumerate(batch):
                arr[j, : counts[j]] = b[name]
            out[name] = arr
    for name in ("flame_shape", "image"):
        if name in batch[0]:
            out[name] = torch.stack([b[name] for b in batch])
    return out
