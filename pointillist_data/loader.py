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
epoch across any number of interruptions, for any batch size and worker count (the
dataset's ``batch_size`` must be the DataLoader's).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .store import TokenStore

__all__ = ["TokenWindowDataset", "window_starts"]


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
        with_conditioning: also yield ``flame_shape (300,)`` and ``image (H, W, 3)``.
        batch_size: the DataLoader's batch size (``None`` there counts as 1). With more than
            one worker the batches are cut here, so the two must agree for an exact resume.
        drop_last: cut the epoch's windows to a multiple of ``world_size`` instead of padding
            it by wrapping around (either way every rank yields the same count).

    Yields:
        dicts with ``tokens (window,)`` int64, ``loss_mask (window,)`` bool, ``sample`` and
        ``start`` (ints), and the conditioning when asked.

    Raises:
        ValueError: window / stride not positive multiples of 4, rank outside the world,
            batch_size below 1.
    """

    def __init__(self, store: TokenStore | str | os.PathLike, window: int = 12000, stride: int | None = None,
                 seed: int = 0, shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 with_conditioning: bool = False, batch_size: int = 1, drop_last: bool = False) -> None:
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
        lengths = 4 * self.store.point_count + 8
        self.windows = np.asarray([(i, s) for i, n in enumerate(lengths)
                                   for s in window_starts(int(n), self.window, self.stride)],
                                  dtype=np.int64).reshape(-1, 2)
        self._tokens: np.ndarray | None = None
        self._cond: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        """Windows this rank yields per epoch (over all its workers; the same on every rank)."""
        n, R = len(self.windows), self.world_size
        return n // R if self.drop_last else -(-n // R)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "windows": len(self.windows),
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: a state saved with another seed.
        """
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"loader state was saved with seed {state['seed']}, this loader has {self.seed}")
        for key, have in (("windows", len(self.windows)), ("world_size", self.world_size)):
            if state.get(key, have) != have:
                warnings.warn(f"loader state was saved with {key}={state[key]}, this loader has {have}: the "
                              "resumed epoch is not the interrupted one", stacklevel=2)
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def advance(self, n: int) -> None:
        """Record ``n`` windows consumed by the training loop (for :meth:`state_dict`)."""
        self.consumed += int(n)

    def rank_order(self) -> np.ndarray:
        """Window rows of this rank for the current epoch, in yield order."""
        n, R = len(self.windows), self.world_size
        idx = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        total = len(self) * R
        idx = idx[:total] if self.drop_last else np.resize(idx, total)  # np.resize repeats from the start
        return idx[self.rank :: R]

    def _load(self) -> None:
        # The committed token region is small (NeRSemble: ~100 MB): one sequential read,
        # then every window is a memory slice.
        if self._tokens is None:
            self._tokens = self.store.read_all_tokens()
            if self.with_conditioning:
                n = len(self.store)
                self._cond = {"flame_shape": self.store.read("flame_shape", 0, n),
                              "image": self.store.read("image", 0, n)}

    def window_item(self, row: int) -> dict[str, Any]:
        self._load()
        i, start = int(self.windows[row, 0]), int(self.windows[row, 1])
        s0 = int(self.store.offsets[i])
        stop = min(start + self.window, 4 * int(self.store.point_count[i]) + 8)
        n = stop - start
        toks = np.empty(self.window, dtype=np.int64)
        toks[:n] = self._tokens[s0 + start : s0 + stop]
        toks[n:] = self.store.vocab.pad
        mask = np.zeros(self.window, dtype=bool)
        mask[:n] = True
        out = {"tokens": torch.from_numpy(toks), "loss_mask": torch.from_numpy(mask), "sample": i, "start": start}
        if self.with_conditioning:
            out["flame_shape"] = torch.from_numpy(self._cond["flame_shape"][i])
            out["image"] = torch.from_numpy(self._cond["image"][i])
        return out

    def __iter__(self):
        rest = self.rank_order()[self.consumed:]
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        B = self.batch_size
        for j in range(wid, -(-len(rest) // B), nw):  # this worker's batches of what remains
            for row in rest[j * B : (j + 1) * B]:
                yield self.window_item(int(row))
