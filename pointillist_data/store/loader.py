"""Training windows from token stores: a deterministic, resumable, rank- and worker-sharded
PyTorch ``IterableDataset`` (paper section 4.1: windows of 12000 tokens slid over each sequence).

Windows start on point boundaries (multiples of 4 tokens; the 4 start tokens count as one
point), are ``window`` tokens long, and are padded with PAD past the end of a sequence with
``loss_mask`` False there. The list of (sample, start) windows is shuffled by
``seed + epoch`` and dealt to the DDP ranks: rank ``r`` of ``R`` takes every ``R``-th window
from ``r``, the list first padded by wrapping around to a multiple of ``R`` (or cut, with
``drop_last``), so every rank yields the same number of windows and no rank waits for
another at the end of an epoch.

A rank's windows reach the training loop in one fixed order whatever the number of
DataLoader workers: the loader hands out whole batches round-robin from worker 0, so worker
``w`` of ``W`` produces the batches ``j`` with ``j % W == w``, batch ``j`` being the windows
``[j * batch_size, (j + 1) * batch_size)`` of what remains. The state dict (epoch, windows
consumed by this rank) therefore restores the exact stream: every window exactly once per
epoch across any number of interruptions, for any batch size and worker count. That needs
the dataset's ``batch_size`` to be the DataLoader's: :meth:`TokenWindowDataset.loader` builds
the DataLoader from the one number, and :meth:`TokenWindowDataset.advance` given the batch
checks each window's ``position`` against the stream, so a DataLoader cut otherwise is an
error at its first out-of-order batch, never a silently repeated or skipped window.

``split`` and ``where`` choose the samples windows are cut from, in the filter language and
fields of ``SampleDataset`` and ``pointillist inspect --where`` (:mod:`pointillist_data.store.query`).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..fileio import atomic_path
from .base import is_remote, sha256_bytes
from .token_store import TokenStore

__all__ = ["TokenWindowDataset", "window_starts", "token_map", "evict_token_maps", "TOKEN_CACHE_MAX_GB"]


TOKEN_CACHE_MAX_GB = 32.0  # default of $POINTILLIST_CACHE_MAX_GB: token maps kept beside the one in use
STALE_PARTIAL_S = 24 * 3600  # a .partial file this old belongs to a writer that died


def token_map(store: TokenStore, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local file holding the store's committed tokens ``(T,)`` uint16, decompressed and
    checksum-verified (:meth:`TokenStore.read_all_tokens`), to memory-map. Its name is the
    sha256 of the store's token-shard checksums and committed length, so it is written once
    per store state and reused; written to a unique temporary name, then renamed.

    Every append makes a new map, so the folder (``$POINTILLIST_CACHE/tokens``) is kept to
    ``$POINTILLIST_CACHE_MAX_GB`` (default :data:`TOKEN_CACHE_MAX_GB`) by deleting the least
    recently used other maps (:func:`evict_token_maps`); a process that still has a deleted
    map open keeps reading it (POSIX unlink semantics)."""
    import json

    keys = sorted(k for k in store.manifest.chunks if k.startswith("tokens/"))
    ident = json.dumps([int(store.offsets[-1]), [store.manifest.chunks[k]["sha256"] for k in keys]])
    folder = Path(cache_dir or os.environ.get("POINTILLIST_CACHE", Path.home() / ".cache" / "pointillist")) / "tokens"
    path = folder / f"{sha256_bytes(ident.encode())[:24]}.u16"
    if not path.exists() or path.stat().st_size != 2 * int(store.offsets[-1]):
        folder.mkdir(parents=True, exist_ok=True)
        # atomic_path, not mkstemp: the map's mode follows the umask (a shared cache stays readable)
        with atomic_path(path, ".partial") as tmp:
            tmp.write_bytes(store.read_all_tokens().astype(np.uint16).tobytes())
    else:
        os.utime(path)  # recently used: the eviction order
    evict_token_maps(folder, keep=path)
    return path


def evict_token_maps(folder: str | os.PathLike, keep: Path | None = None, max_bytes: float | None = None) -> list[Path]:
    """Delete the least recently used (oldest mtime) ``*.u16`` maps in ``folder`` other than
    ``keep`` until the maps total at most ``max_bytes`` (default ``$POINTILLIST_CACHE_MAX_GB``
    GB, else :data:`TOKEN_CACHE_MAX_GB`), and ``*.partial`` files older than a day (left by a
    writer that died). Returns the deleted paths; files that vanish meanwhile are skipped."""
    folder = Path(folder)
    if max_bytes is None:
        max_bytes = float(os.environ.get("POINTILLIST_CACHE_MAX_GB", TOKEN_CACHE_MAX_GB)) * 1e9
    now, removed = time.time(), []

    def stat(p: Path):
        try:
            return p.stat()
        except FileNotFoundError:
            return None

    for p in folder.glob("*.partial"):
        st = stat(p)
        if st is not None and now - st.st_mtime > STALE_PARTIAL_S:
            p.unlink(missing_ok=True)
            removed.append(p)
    maps = [(st.st_mtime, st.st_size, p) for p in folder.glob("*.u16") if (st := stat(p)) is not None]
    total = sum(size for _, size, _ in maps)
    for _, size, p in sorted(maps):  # oldest first
        if total <= max_bytes:
            break
        if keep is not None and p == keep:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
        total -= size
    return removed


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Point-aligned starts covering a sequence of ``length`` tokens (the last window may pad)."""
    if window % 4 or stride % 4 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive multiples of 4")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(starts[-1] + stride)
    return starts


class TokenWindowDataset(IterableDataset):
    """Iterate training windows of a :class:`TokenStore`.

    Args:
        store: an open store, or its path / URL.
        window: tokens per window (12000 = 3000 points, the paper's).
        stride: tokens between window starts (default: ``window``).
        seed: shuffle seed; the order of epoch ``e`` is a permutation seeded by ``seed + e``.
        shuffle: shuffle windows (False keeps store order).
        rank, world_size: DDP position (default: from ``torch.distributed`` when initialised).
        with_conditioning: also yield ``flame_shape (300,)`` and ``image (H, W, 3)`` (read
            per window from the store, never all at once).
        source_images: with ``with_conditioning``, draw each window's ``image`` from the
            identity's captured views instead of the store's portrait
            (:class:`~pointillist_data.store.source_images.SourceImages`, keyed by the epoch
            and the window, so the draw survives a resume); the window then also yields
            ``source (2,)`` int64, the ``(timestep, camera)`` drawn. It must cover every
            identity the windows are cut from.
        batch_size: the DataLoader's batch size (``None`` there counts as 1). With more than
            one worker the batches are cut here, so the two must agree for an exact resume:
            use :meth:`loader`, and pass each batch to :meth:`advance` (which checks it).
        split: only samples whose manifest ``split`` is this (``train``, ``test``; ``None`` or
            ``"all"``: every sample).
        where: only samples matching this filter (:mod:`pointillist_data.store.query`, e.g.
            ``"psnr >= 28"``); errors name ``where=``.
        drop_last: cut the epoch's windows to a multiple of ``world_size`` instead of padding
            it by wrapping around (either way every rank yields the same count).
        token_cache: how windows are read. ``"memmap"``: the committed tokens are
            decompressed once (checksum-verified) into a file under ``$POINTILLIST_CACHE``
            (keyed by the store's token checksums) that every worker memory-maps: the pages
            are shared through the page cache, so memory per worker stays flat and a window is
            a slice. ``"none"``: every window is read through zarr (a chunk decompressed per
            window; no local disk used; the time to a first batch stays short on S3 / HTTP).
            ``"auto"`` (default): ``memmap`` for a local store, ``none`` for a remote one.

    Yields:
        dicts with ``tokens (window,)`` int64, ``loss_mask (window,)`` bool, ``sample`` (the
        store index), ``start`` and ``position`` (the window's place in this rank's epoch
        order, checked by :meth:`advance`) as ints, and the conditioning when asked.

    Attributes:
        samples: the store indices windows are cut from (``split`` / ``where`` applied);
        subject_ids: their ids.

    Raises:
        ValueError: window / stride not positive multiples of 4, rank outside the world,
            batch_size below 1. InputError: a bad ``where``.
    """

    def __init__(self, store: TokenStore | str | os.PathLike, window: int = 12000, stride: int | None = None,
                 seed: int = 0, shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 with_conditioning: bool = False, batch_size: int = 1, drop_last: bool = False,
                 token_cache: str = "auto", split: str | None = None, where: str | None = None,
                 source_images: Any = None) -> None:
        super().__init__()
        self.store = store if isinstance(store, TokenStore) else TokenStore.open(store)
        self.window, self.stride = window, stride or window
        self.seed, self.shuffle, self.with_conditioning = seed, shuffle, with_conditioning
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.drop_last = int(batch_size), drop_last
        if rank is None or world_size is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if dist else 0
            world_size = torch.distributed.get_world_size() if dist else 1
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.rank, self.world_size = rank, world_size
        self.epoch, self.consumed = 0, 0
        from .query import select_samples

        self.split, self.where = split, where
        rows = select_samples(self.store, split, where, "where=") if (split not in (None, "all") or where) \
            else [{"index": i, "subject_id": s} for i, s in enumerate(self.store.subject_ids())]
        self.samples = np.asarray([r["index"] for r in rows], dtype=np.int64)
        self.subject_ids = [str(r["subject_id"]) for r in rows]
        self._subject = dict(zip(self.samples.tolist(), self.subject_ids, strict=True))
        if source_images is not None:
            uncovered = sorted(set(self.subject_ids) - set(source_images.subjects))
            if uncovered:
                raise ValueError(f"source_images does not cover the identities {uncovered[:5]} the windows are cut from")
        self.source_images = source_images
        lengths = 4 * self.store.point_count + 8
        self.windows = np.asarray([(i, s) for i in self.samples.tolist()
                                   for s in window_starts(int(lengths[i]), self.window, self.stride)],
                                  dtype=np.int64).reshape(-1, 2)
        from .datasets import StoreHandle

        # each window is read on demand through zarr, by a store each worker process opens
        # itself: memory per worker stays flat, and S3 / HTTP clients are never shared by a fork
        self._handle = StoreHandle(self.store)
        if token_cache not in ("auto", "memmap", "none"):
            raise ValueError(f"token_cache must be auto, memmap or none, got '{token_cache}'")
        if token_cache == "auto":
            token_cache = "none" if is_remote(self._handle.url) else "memmap"
        self.token_cache = token_cache
        self._map_path = token_map(self.store) if token_cache == "memmap" else None
        self._map: tuple[int, np.ndarray] | None = None
        self._shapes: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # a pickled copy (spawned workers) re-maps the token file and re-reads the shapes itself
        return {**self.__dict__, "_map": None, "_shapes": None}

    def __len__(self) -> int:
        """Windows this rank yields per epoch (over all its workers; the same on every rank)."""
        n, R = len(self.windows), self.world_size
        return n // R if self.drop_last else -(-n // R)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "windows": len(self.windows),
                "world_size": self.world_size, "samples": len(self.samples)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: a state saved with another seed.
        """
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"loader state was saved with seed {state['seed']}, this loader has {self.seed}")
        for key, have in (("windows", len(self.windows)), ("world_size", self.world_size),
                          ("samples", len(self.samples))):
            if state.get(key, have) != have:
                warnings.warn(f"loader state was saved with {key}={state[key]}, this loader has {have}: the "
                              "resumed epoch is not the interrupted one", stacklevel=2)
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def loader(self, num_workers: int = 0, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A DataLoader of this dataset cut into batches of this dataset's ``batch_size`` (the
        one number an exact resume needs); ``kwargs`` go to the DataLoader (``pin_memory``,
        ``persistent_workers``...; not ``batch_size``)."""
        return torch.utils.data.DataLoader(self, batch_size=self.batch_size, num_workers=num_workers, **kwargs)

    def advance(self, batch: int | dict[str, Any]) -> None:
        """Record the windows the training loop consumed (for :meth:`state_dict`): a count, or
        the batch itself, whose ``position`` entries must be the next ones of this rank's
        stream.

        Raises:
            ValueError: a batch out of order - the DataLoader's ``batch_size`` is not this
                dataset's (with several workers the loader would then repeat and skip
                windows on resume).
        """
        if isinstance(batch, dict):
            got = [int(p) for p in torch.as_tensor(batch["position"]).reshape(-1).tolist()]
            want = list(range(self.consumed, self.consumed + len(got)))
            if got != want:
                raise ValueError(f"TokenWindowDataset: windows arrived out of order (positions {got[:8]} where "
                                 f"{want[:8]} were next): the DataLoader's batch_size must be the dataset's "
                                 f"batch_size ({self.batch_size}); build it with dataset.loader(num_workers=...)")
            n = len(got)
        else:
            n = int(batch)
        self.consumed += n

    def rank_order(self) -> np.ndarray:
        """Window rows of this rank for the current epoch, in yield order."""
        n, R = len(self.windows), self.world_size
        idx = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        total = len(self) * R
        idx = idx[:total] if self.drop_last else np.resize(idx, total)  # np.resize repeats from the start
        return idx[self.rank :: R]

    def window_item(self, row: int, position: int = -1) -> dict[str, Any]:
        """The window ``self.windows[row]``; ``position``: its place in the rank's stream."""
        st = self._handle.get()
        i, start = int(self.windows[row, 0]), int(self.windows[row, 1])
        s0 = int(st.offsets[i])
        stop = min(start + self.window, 4 * int(st.point_count[i]) + 8)
        n = stop - start
        toks = np.empty(self.window, dtype=np.int64)
        if self._map_path is not None:
            if self._map is None or self._map[0] != os.getpid():
                self._map = (os.getpid(), np.memmap(self._map_path, dtype=np.uint16, mode="r"))
            toks[:n] = self._map[1][s0 + start : s0 + stop]
        else:
            toks[:n] = st.read("tokens", s0 + start, s0 + stop)
        toks[n:] = st.vocab.pad
        mask = np.zeros(self.window, dtype=bool)
        mask[:n] = True
        out = {"tokens": torch.from_numpy(toks), "loss_mask": torch.from_numpy(mask), "sample": i, "start": start,
               "position": position}
        if self.with_conditioning:
            if self._shapes is None or self._shapes[0] != os.getpid():  # 1.2 kB per sample: read once
                self._shapes = (os.getpid(), st.read("flame_shape", 0, len(st)))
            out["flame_shape"] = torch.from_numpy(self._shapes[1][i].copy())
            if self.source_images is None:
                out["image"] = torch.from_numpy(st.read("image", i, i + 1)[0])
            else:  # UnselectedIdentityError for a window of an identity outside the selection
                sid = self._subject.get(i)
                img, kc = self.source_images.draw(sid if sid is not None else st.subject_ids()[i], (self.epoch, row))
                out["image"], out["source"] = torch.from_numpy(img), torch.as_tensor(kc, dtype=torch.int64)
        return out

    def __iter__(self):
        c0 = self.consumed
        rest = self.rank_order()[c0:]
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        B = self.batch_size
        for j in range(wid, -(-len(rest) // B), nw):  # this worker's batches of what remains
            for k in range(j * B, min((j + 1) * B, len(rest))):
                yield self.window_item(int(rest[k]), c0 + k)
