"""Source images drawn from an identity's captured views, as one-shot avatar models train.

With one fixed portrait per identity the AR model can learn that portrait by heart instead of
reading the person from it. One-shot head-avatar models (e.g. GAGAvatar, Portrait4D) draw the
source image of each training example from many frames and near-frontal cameras of the
identity; :class:`SourceImages` does that from the supervision store
(:mod:`pointillist_data.store.supervision`): for each identity of the training selection the
candidates are the ``cameras`` most frontal cameras
(:func:`~pointillist_data.store.supervision_build.frontal_order`) at ``frames`` stored
timesteps spread over all but the last ``holdout`` ones. The held-out timesteps are never
drawn: they give each trained identity a source frame that training never saw. Every image is
the view's centred square through :func:`~pointillist_data.portrait.portrait_crop`, the one
preparation of the token store's portraits and of every inference path.

A draw is keyed (``seed`` and a caller's key, e.g. the epoch and window), so a run and its
resumed copy, with any number of DataLoader workers, condition every window on the same view.
Only the identities given at construction can be drawn: a draw for another one (a test
identity reaching training) raises :class:`UnselectedIdentityError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, PointillistError
from ..portrait import SOURCE_MODES, portrait_crop
from .supervision import SupervisionStore
from .supervision_build import frontal_order

__all__ = ["SOURCE_MODES", "SourceImages", "UnselectedIdentityError", "spread"]


class UnselectedIdentityError(PointillistError, ValueError):
    """A source image was asked for an identity outside the selection it was built for."""


def spread(n: int, k: int | None) -> list[int]:
    """``k`` indices of ``range(n)`` evenly spaced, first and last included (all when ``k`` is
    ``None`` or at least ``n``)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def _url(store: SupervisionStore) -> str:
    proto = store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]
    return store.root if proto in ("file", "local") else store.fs.unstrip_protocol(store.root)


class SourceImages:
    """Conditioning images drawn from the supervision store's views of selected identities.

    Args:
        supervision: an open :class:`SupervisionStore`, or its path / URL.
        subjects: the identities that may be drawn (the training selection, split applied).
        size: side (pixels) of the square images returned (the token store's portrait side).
        frames: stored timesteps drawn from per identity, evenly spread over those not held
            out (``None``: all of them).
        cameras: the most frontal cameras drawn from (>= 1; fewer when the identity has fewer).
        holdout: the last this many stored timesteps of every identity are never drawn.
        seed: seeds every draw (with the key given to :meth:`draw`).

    Attributes:
        candidates: ``{subject: (n, 2) int64}`` the ``(timestep, camera)`` views drawn from.
        heldout: ``{subject: (m, 2) int64}`` the views of the held-out timesteps at the same
            cameras, most frontal camera first within each timestep.

    Raises:
        InputError: an identity missing from the supervision store, one with no timestep
            left after the hold-out, or settings out of range (each naming the store).
    """

    def __init__(self, supervision: SupervisionStore | str | os.PathLike, subjects: Sequence[str], size: int,
                 frames: int | None = None, cameras: int = 3, holdout: int = 1, seed: int = 0) -> None:
        st = supervision if isinstance(supervision, SupervisionStore) else SupervisionStore.open(supervision)
        self.url, self.verify = _url(st), st.verify
        self._store: tuple[int, SupervisionStore] | None = (os.getpid(), st)
        if size < 1 or cameras < 1 or holdout < 1 or (frames is not None and frames < 1):
            raise InputError(self.url, f"source images need size, cameras, holdout and frames >= 1 (got {size}, "
                             f"{cameras}, {holdout}, {frames})")
        self.size, self.frames, self.cameras, self.holdout, self.seed = int(size), frames, int(cameras), int(holdout), \
            int(seed)
        ids = st.subject_ids()
        missing = [s for s in subjects if s not in set(ids)]
        if missing:
            raise InputError(self.url, f"no supervision for identities {missing[:5]} of the training selection "
                             f"({len(missing)} missing)", "run the supervise stage for them, or train with "
                             "--source-images portrait")
        self.rows: dict[str, int] = {}
        self.candidates: dict[str, np.ndarray] = {}
        self.heldout: dict[str, np.ndarray] = {}
        self._names: dict[str, tuple[list[str], list[str]]] = {}
        for s in dict.fromkeys(str(x) for x in subjects):
            i = ids.index(s)
            K, _ = (int(x) for x in st.counts[i])
            if K <= holdout:
                raise InputError(self.url, f"identity {s} has {K} stored timestep(s): holding out {holdout} leaves "
                                 "none to draw source images from", "store more timesteps (supervise --timesteps) "
                                 "or lower --source-holdout")
            cams = st.cameras(i)
            front = frontal_order(np.stack([c.world_to_cam for c in cams]))[:cameras].astype(np.int64)
            train_t = spread(K - holdout, frames)
            self.rows[s] = i
            self.candidates[s] = np.asarray([(k, c) for k in train_t for c in front], np.int64).reshape(-1, 2)
            self.heldout[s] = np.asarray([(k, c) for k in range(K - holdout, K) for c in front],
                                         np.int64).reshape(-1, 2)
            tids = [str(t) for t in st.params(i).timestep_id]
            self._names[s] = (tids, [c.serial for c in cams])

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the store themselves (fsspec clients are not fork-safe)
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> SupervisionStore:
        if self._store is None or self._store[0] != os.getpid():
            self._store = (os.getpid(), SupervisionStore.open(self.url, verify=self.verify))
        return self._store[1]

    @property
    def subjects(self) -> list[str]:
        return list(self.candidates)

    def image(self, subject: str, timestep: int, camera: int) -> np.ndarray:
        """The view ``(timestep, camera)`` of ``subject`` (any stored view, held-out ones
        included) as a ``(size, size, 3)`` uint8 portrait (:func:`portrait_crop`).

        Raises:
            KeyError: ``subject`` is not in the supervision store. IndexError: no such view.
        """
        i = self.rows[subject] if subject in self.rows else self.store.index(subject)
        return portrait_crop(self.store.view(i, int(timestep), int(camera))[0], self.size)

    def draw(self, subject: str, key: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
        """A source image of ``subject``: the candidate view chosen by ``(seed, *key)``.

        Args:
            key: non-negative ints naming the draw (the loader: ``(epoch, window row)``).

        Returns:
            ``(image (size, size, 3) uint8, (timestep, camera))``.

        Raises:
            UnselectedIdentityError: ``subject`` is not one this object was built for.
        """
        cand = self.candidates.get(str(subject))
        if cand is None:
            raise UnselectedIdentityError(f"{self.url}: identity '{subject}' is not among the {len(self.candidates)} "
                                          "identities of the training selection (a test identity reaching "
                                          "training?); refusing to draw its source image")
        j = int(np.random.default_rng([self.seed, *(int(x) for x in key)]).integers(len(cand)))
        k, c = (int(x) for x in cand[j])
        return self.image(subject, k, c), (k, c)

    def named(self, subject: str, views: np.ndarray) -> list[list[str]]:
        """``[[timestep_id, serial], ...]`` of ``(timestep, camera)`` index pairs of ``subject``."""
        tids, serials = self._names[subject]
        return [[tids[int(k)], serials[int(c)]] for k, c in np.asarray(views).reshape(-1, 2)]

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps: the settings and, per identity, the views drawn from
        (``train``) and the held-out ones never drawn (``heldout``), as
        ``[timestep_id, serial]`` pairs and as ``(timestep, camera)`` store indices."""
        return {"mode": "views", "supervision": self.url, "size": self.size, "frames": self.frames,
                "cameras": self.cameras, "holdout": self.holdout, "seed": self.seed,
                "identities": {s: {"train": self.named(s, self.candidates[s]),
                                   "heldout": self.named(s, self.heldout[s]),
                                   "train_index": self.candidates[s].tolist(),
                                   "heldout_index": self.heldout[s].tolist()} for s in self.candidates}}

