"""A map-style PyTorch ``Dataset`` over a supervision store: one item per captured view."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..flame.params import FlameParams
from .supervision import PER_TIMESTEP, SupervisionStore

__all__ = ["SupervisionDataset"]


class SupervisionDataset(Dataset):
    """Views of a supervision store, indexed identity-major, then timestep, then camera.

    Args:
        store: an open :class:`SupervisionStore`, or its path / URL.
        background: when set, ``rgb`` is composited over this grey level with the mask
            (``rgb * m + background * (1 - m)``), as the decoder's renders are.
        split, where: only the identities whose sample in the token store ``tokens`` has this
            ``split`` (``None`` / ``"all"``: every split) and matches this filter, in the
            language and fields of ``SampleDataset`` (:mod:`pointillist_data.store.query`); an
            identity without a token-store sample is then left out.
        tokens: the token store (open, or a path / URL) the split and fields are read from;
            needed with ``split`` / ``where``.

    Attributes:
        identities: store indices of the identities kept; subject_ids: their ids.

    Items are dicts: ``identity``, ``timestep``, ``camera`` (ints), ``subject_id``,
    ``rgb (H, W, 3)`` float32 in [0, 1], ``mask (H, W)`` float32 in [0, 1],
    ``K (3, 3)`` float32 pixels, ``world_to_cam (4, 4)`` float32 (OpenCV, metres), and
    ``flame``: the timestep's FLAME parameters (``rotation (3,)`` ... ``expr (100,)``, VHAP keys).
    ``identity`` is the store index (the same with or without a selection).

    Raises:
        InputError: ``split`` / ``where`` without ``tokens``, or a bad ``where`` (naming ``where=``).
    """

    def __init__(self, store: SupervisionStore | str, background: float | None = None, split: str | None = None,
                 where: str | None = None, tokens: Any = None) -> None:
        self.store = SupervisionStore.open(store) if isinstance(store, str) else store
        self.background = background
        ids = self.store.subject_ids()
        if split not in (None, "all") or where:
            if tokens is None:
                raise InputError("tokens=", "split= and where= read the token store's split and fields: pass "
                                 "tokens=<token store>")
            from .query import select_samples
            from .token_store import TokenStore

            tok = tokens if isinstance(tokens, TokenStore) else TokenStore.open(tokens)
            keep = {str(r["subject_id"]) for r in select_samples(tok, split, where, "where=")}
            self.identities = np.asarray([i for i, s in enumerate(ids) if s in keep], dtype=np.int64)
        else:
            self.identities = np.arange(len(ids), dtype=np.int64)
        self.subject_ids = [ids[i] for i in self.identities]
        self._pos = {int(i): k for k, i in enumerate(self.identities)}
        counts = self.store.counts[self.identities] if len(self.identities) else np.zeros((0, 2), np.int64)
        self.views_per_identity = counts[:, 0] * counts[:, 1]
        self.starts = np.concatenate([[0], np.cumsum(self.views_per_identity)]).astype(np.int64)
        self._params: dict[int, FlameParams] = {}
        self._cams: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[int, int, int]:
        """``(identity, timestep, camera)`` of a flat view index."""
        if not 0 <= index < len(self):
            raise IndexError(f"view {index} out of range for {len(self)} views")
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        i = int(self.identities[k])
        r = index - int(self.starts[k])
        C = int(self.store.counts[i, 1])
        return i, r // C, r % C

    def flat_index(self, identity: int, timestep: int, camera: int) -> int:
        """Inverse of :meth:`locate` (``identity``: the store index).

        Raises:
            IndexError: a view outside the identity, or an identity not in this selection.
        """
        if identity not in self._pos:
            raise IndexError(f"identity {identity} is not in this selection")
        K, C = (int(x) for x in self.store.counts[identity])
        if not (0 <= timestep < K and 0 <= camera < C):
            raise IndexError(f"view ({timestep}, {camera}) outside {K} x {C} of identity {identity}")
        return int(self.starts[self._pos[identity]]) + timestep * C + camera

    def params(self, identity: int) -> FlameParams:
        """The identity's FLAME parameters (cached)."""
        if identity not in self._params:
            self._params[identity] = self.store.params(identity)
        return self._params[identity]

    def cameras(self, identity: int) -> tuple[np.ndarray, np.ndarray]:
        """``(K (C, 3, 3), world_to_cam (C, 4, 4))`` float32 of the identity (cached)."""
        if identity not in self._cams:
            cams = self.store.cameras(identity)
            self._cams[identity] = (np.stack([c.K for c in cams]).astype(np.float32),
                                    np.stack([c.world_to_cam for c in cams]).astype(np.float32))
        return self._cams[identity]

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, k, c = self.locate(int(index))
        rgb, mask = self.store.view(i, k, c)
        rgb = torch.from_numpy(rgb.astype(np.float32) / 255.0)
        m = torch.from_numpy(mask.astype(np.float32) / 255.0)
        if self.background is not None:
            rgb = rgb * m[..., None] + self.background * (1.0 - m[..., None])
        p = self.params(i)
        Ks, M = self.cameras(i)
        return {"identity": i, "timestep": k, "camera": c, "subject_id": self.store.subject_ids()[i], "rgb": rgb,
                "mask": m, "K": torch.from_numpy(Ks[c]), "world_to_cam": torch.from_numpy(M[c]),
                "flame": {key: torch.from_numpy(np.asarray(getattr(p, key)[k], np.float32)) for key in PER_TIMESTEP}}
