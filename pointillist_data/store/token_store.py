"""Sharded Zarr v3 token stores: the dataset format researchers consume.

One Zarr v3 group per dataset (format version :data:`FORMAT_VERSION`, store type
``pointillist.tokens``)::

    tokens         (T,)        uint16   all sequences, packed, sharded (T = offsets[S])
    offsets        (S + 1,)    int64    tokens[offsets[i]:offsets[i + 1]] is sample i; fill -1 (not yet committed); written LAST
    point_offsets  (S + 1,)    int64    per-point rows point_offsets[i]:point_offsets[i + 1] are sample i
    points         (P, 3)      float32  canonical global positions (metres), in token order
    binding        (P,)        int32    FLAME face index per point
    rgb            (P, 3)      float32  colour (SH DC as RGB)
    opacity        (P,)        float32  activated opacity
    scale          (P, 3)      float32  activated global scale (metres)
    rotation       (P, 4)      float32  global wxyz quaternion
    point_count    (S,)        int32
    subject_id     (S,)        str
    flame_shape    (S, 300)    float32  tracked identity coefficients
    image          (S, H, W, 3) uint8   conditioning frontal crop, one chunk per sample

Format 1.2 packs the rows: every append starts where the last committed sample ends (the
shard holding that end is rewritten whole, atomically), so the offsets delimit each sample
exactly and no PAD is committed. Format 1.1 stores (still read and appended to) padded each
append batch to a shard boundary: there the last sample of a batch is followed by PAD, and
its sequence is ``tokens[offsets[i]:offsets[i] + 4 * point_count[i] + 8]`` (what
:meth:`TokenStore.token_range` returns for every format).

Group attributes: ``format_version``, ``store_type``, ``vocabulary``, ``quant_box``,
``canonical`` (the canonical FLAME parameters used), ``shards`` (shard sizes),
``created_by``. ``manifest.json`` beside the arrays holds the sha256 of every shard and
chunk of every array, of the array metadata and attributes, and of itself, plus one entry
per sample (``samples``: ``subject_id``, ``points``, ``tokens``, ``split``, ``provenance``;
:mod:`pointillist_data.provenance`) and the sha256 of the dataset card files ``DATASET.md``
and ``DATASET.png`` beside the arrays (``documents``; :mod:`pointillist_data.store.card`).

Consistency and durability (:mod:`pointillist_data.store.base`,
:mod:`pointillist_data.store.commit`): a writer appends whole shards only, then the
per-sample rows, then the manifest, and the ``offsets`` values last. A reader counts the
committed samples from the leading valid entries of ``offsets``, so it never sees a torn
sample, and never trusts the consolidated metadata, so it never misses a committed one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Progress
from ..tokens import FRAME, QuantBox, TokenGrammarError, Vocabulary, check_grammar, decode
from .base import (
    MANIFEST,
    IncompleteStoreError,
    MetadataError,
    Problem,
    ShardChecksumError,
    StoreError,
    StoreNotFoundError,
    StoreReader,
    object_keys,
    open_group,
    sha256_bytes,
)
from .check import check_store
from .remote import raise_if_transport

__all__ = ["TokenStore", "StoreError", "StoreNotFoundError", "IncompleteStoreError", "ShardChecksumError", "MetadataError",
           "StoreValidationError", "FORMAT_VERSION", "POINT_ARRAYS", "SAMPLE_ARRAYS", "STORE_TYPE", "validate_store",
           "check_token_store", "open_group", "shard_keys", "sha256_bytes", "local_path"]

FORMAT_VERSION = "1.2"  # 1.1: each append batch padded to a shard boundary; 1.2: packed (exact offsets)
STORE_TYPE = "pointillist.tokens"
POINT_ARRAYS = {"points": 3, "binding": 0, "rgb": 3, "opacity": 0, "scale": 3, "rotation": 4}
SAMPLE_ARRAYS = ("point_count", "subject_id", "flame_shape", "image")
shard_keys = object_keys  # the name of earlier versions


class StoreValidationError(ShardChecksumError):
    """``validate_store`` found problems; :attr:`problems` lists every one (the message too)."""

    def __init__(self, root: str, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{root}: {len(problems)} problem(s): " + "; ".join(str(p) for p in problems))


class TokenStore(StoreReader):
    """Read access to a token store (``store[i]``, ``len``, iteration, ``to_points(i)``).

    Args:
        group: the opened Zarr group (:func:`open_group`).
        fs, root: fsspec filesystem and root path.
        verify: check each shard's and chunk's sha256 against the manifest the first time
            it is read (raising :class:`ShardChecksumError` naming it). ``verify=False``
            reads are unchecked: a corrupted object may decode to wrong values.
    """

    store_type = STORE_TYPE
    format_version = FORMAT_VERSION

    def __init__(self, group, fs, root: str, verify: bool = True) -> None:
        super().__init__(group, fs, root, verify)
        try:
            self.vocab = Vocabulary(**{k: self.attrs["vocabulary"][k] for k in ("num_bins", "num_faces")})
            self.box = QuantBox.from_dict(self.attrs["quant_box"])
        except (KeyError, TypeError, ValueError) as e:  # damaged attributes read unchecked (verify=False)
            raise MetadataError(f"{root}: attributes: zarr.json: unreadable vocabulary or quant_box "
                                f"({type(e).__name__}: {e})") from e
        self._point_offsets: np.ndarray | None = None
        self._point_count: np.ndarray | None = None

    @classmethod
    def open(cls, path_or_url: str | Path, verify: bool = True) -> TokenStore:
        """Open a store on a local path or an fsspec URL (``s3://``, ``memory://``...).

        Raises:
            StoreNotFoundError: no store there; IncompleteStoreError: its creation was
            interrupted; StoreError: an unreadable format version or another store type.
        """
        g, fs, root = open_group(path_or_url, "r")
        return cls(g, fs, root, verify)

    @property
    def point_offsets(self) -> np.ndarray:
        """``(S + 1,)`` int64 row start of each sample in the per-point arrays."""
        if self._point_offsets is None:
            self._point_offsets = self.read("point_offsets", 0, self.num_samples + 1).astype(np.int64)
        return self._point_offsets

    @property
    def point_count(self) -> np.ndarray:
        """``(S,)`` int64 points per sample."""
        if self._point_count is None:
            self._point_count = self.read("point_count", 0, self.num_samples).astype(np.int64)
        return self._point_count

    def extents(self) -> dict[str, int]:
        S = self.num_samples
        ext = {"offsets": S + 1, "point_offsets": S + 1, "tokens": int(self.offsets[S])}
        ext.update({name: int(self.point_offsets[S]) for name in POINT_ARRAYS})
        ext.update({name: S for name in SAMPLE_ARRAYS})
        return ext

    def sample_bounds(self, name: str):
        if name in ("offsets", "point_offsets"):
            return "boundary"
        if name == "tokens":
            return self.offsets
        return self.point_offsets if name in POINT_ARRAYS else None

    def token_range(self, i: int) -> tuple[int, int]:
        """``[start, stop)`` of sample ``i`` in ``tokens``."""
        i = self._check(i)
        start = int(self.offsets[i])
        return start, start + 4 * int(self.point_count[i]) + 2 * FRAME

    def tokens(self, i: int) -> np.ndarray:
        """Token sequence ``(4N + 8,)`` uint16 of sample ``i``."""
        return self.read("tokens", *self.token_range(i))

    def read_all_tokens(self) -> np.ndarray:
        """The committed token region ``tokens[: offsets[-1]]`` (one sequential read): the
        concatenation of every sequence (format 1.1 stores: with PAD after each append batch's
        last sample, so that ``offsets`` index it)."""
        return self.read("tokens", 0, int(self.offsets[-1]) if self.num_samples else 0)

    def point_attributes(self, i: int) -> dict[str, np.ndarray]:
        """Per-point arrays of sample ``i`` (``points binding rgb opacity scale rotation``)."""
        i = self._check(i)
        s = int(self.point_offsets[i])
        return {name: self.read(name, s, s + int(self.point_count[i])) for name in POINT_ARRAYS}

    def entries(self) -> list[dict[str, Any]]:
        """The manifest entry of each committed sample: ``subject_id``, ``points``, ``tokens``
        and, for stores written since format 1.1 with provenance, ``split`` and ``provenance``
        (:mod:`pointillist_data.provenance`)."""
        return list(self.manifest.extra.get("samples", []))[: self.num_samples]

    def quality_table(self) -> list[dict[str, Any]]:
        """One flat row per committed sample (``index``, ``subject_id``, ``split`` and the
        quality figures of :data:`pointillist_data.provenance.QUALITY_FIELDS`)."""
        from ..provenance import quality_of

        return [{"index": i, **quality_of(e)} for i, e in enumerate(self.entries())]

    def document(self, name: str = "DATASET.md") -> bytes:
        """A card file of the store (``DATASET.md``, ``DATASET.png``), checked against the manifest.

        Raises:
            StoreError: not listed or missing; ShardChecksumError: its sha256 does not match.
        """
        from .base import read_raw
        from .card import document_problems

        if name not in (self.manifest.extra.get("documents") or {}):
            raise StoreError(f"{self.root}/{name}: not in the store (written by the first append)")
        bad = [p for p in document_problems(self) if p.key == name]
        if bad:
            raise ShardChecksumError(f"{self.root}: {bad[0]}")
        return read_raw(self.zstore, name)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i``: ``subject_id``, ``tokens``, ``point_count``, per-point arrays
        (``points binding rgb opacity scale rotation``), ``flame_shape (300,)``, ``image (H, W, 3)``."""
        i = self._check(i)
        out: dict[str, Any] = {"subject_id": str(self.read("subject_id", i, i + 1)[0]), "tokens": self.tokens(i),
                               "point_count": int(self.point_count[i])}
        out.update(self.point_attributes(i))
        out["flame_shape"] = self.read("flame_shape", i, i + 1)[0]
        out["image"] = self.read("image", i, i + 1)[0]
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def to_points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded ``(points (N, 3) float32, binding (N,) int64)`` of sample ``i``'s tokens."""
        return decode(self.tokens(i), self.box, self.vocab)


def _sample_problems(st: TokenStore, skip: set[int]) -> list[Problem]:
    """Content checks of every committed sample not in ``skip`` (their objects are damaged)."""
    out: list[Problem] = []
    S, pad = len(st), st.vocab.pad
    fmt = str(st.attrs.get("format_version", ""))
    packed = tuple(int(x) for x in fmt.split(".")[:2] if x.isdigit()) >= (1, 2)
    try:
        ids = st.subject_ids()
        counts, poff = st.point_count, st.point_offsets
    except MetadataError:  # a damaged zarr.json, which check_store has listed with every sample
        return []
    except Exception as e:
        raise_if_transport(e, st.fs.unstrip_protocol(st.root), "the per-sample arrays")
        return [Problem("store", "", f"per-sample arrays unreadable ({type(e).__name__}: {e})", (0, S) if S else None)]
    if np.any(np.diff(st.offsets) < 0) or np.any(np.diff(poff) < 0):
        out.append(Problem("offsets", "", "offsets are not monotone", (0, S)))
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if sid in seen:
            out.append(Problem("subject_id", "", f"duplicate subject id '{sid}' (also sample {seen[sid]})", (i, i + 1)))
        seen.setdefault(sid, i)
    for i in range(S):
        if i in skip:
            continue
        p = lambda arr, text, i=i: Problem(arr, "", text, (i, i + 1), [ids[i]])  # noqa: E731
        try:
            s, e = st.token_range(i)
            nxt = int(st.offsets[i + 1])
            if e > nxt:
                out.append(p("tokens", "the sequence overruns the next offset"))
                continue
            if packed and (e != nxt or int(poff[i + 1]) - int(poff[i]) != counts[i]):
                out.append(p("offsets", f"offsets do not delimit the sample exactly (format {fmt})"))
            seg = st.read("tokens", s, nxt)
            try:
                check_grammar(seg[: e - s], st.vocab)
            except TokenGrammarError as err:
                out.append(p("tokens", f"token {s + err.position}: {err}"))
            if np.any(seg[e - s:] != pad):
                out.append(p("tokens", "non-PAD tokens between this sample and the next"))
            if int(poff[i + 1]) - int(poff[i]) < counts[i]:
                out.append(p("point_offsets", "per-point rows overrun the next sample's"))
            st[i]  # every array of the sample decodes
        except Exception as err:  # undecodable despite a matching checksum
            raise_if_transport(err, st.fs.unstrip_protocol(st.root), f"sample {i}")
            out.append(p("store", f"unreadable ({type(err).__name__}: {err})"))
    return out


def check_token_store(path_or_url: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Check everything :func:`validate_store` checks; report instead of raising.

    Returns:
        ``{"problems": [Problem], "notes": [str], "samples", "tokens", "points",
        "shards_checked", "format_version"}``; counts are 0 when unreadable.

    Raises:
        StoreNotFoundError: no store there.
    """
    st, problems, notes = check_store(TokenStore, path_or_url, progress)
    summary: dict[str, Any] = {"problems": problems, "notes": notes, "samples": 0, "tokens": 0, "points": 0,
                               "shards_checked": 0, "format_version": None}
    if st is None:
        return summary
    assert isinstance(st, TokenStore)
    skip = {i for p in problems if p.samples for i in range(*p.samples)}
    problems += _sample_problems(st, skip)
    if not any(p.array == MANIFEST for p in problems):
        from .card import document_problems

        problems += document_problems(st)
    try:
        n = int(st.point_count.sum())
        summary.update(tokens=int(4 * n + 8 * len(st)), points=n)
    except Exception:
        pass
    summary.update(samples=len(st), format_version=st.attrs.get("format_version"),
                   shards_checked=len(st.manifest.chunks) if not any(p.array == MANIFEST for p in problems) else 0)
    return summary


def validate_store(path_or_url: str | Path) -> dict[str, Any]:
    """Check a store: its manifest's own checksum, the sha256 of every shard and chunk of every
    array, array metadata and attributes, the grammar of every sequence, monotone offsets,
    offsets that delimit each sample exactly (format 1.2; PAD between samples in 1.1), point
    counts, per-point rows and unique subject ids.

    Returns:
        A summary (``samples``, ``tokens``, ``points``, ``shards_checked``, ``format_version``,
        ``notes``).

    Raises:
        StoreNotFoundError / IncompleteStoreError: no (complete) store there.
        StoreValidationError: every problem found (``.problems``), each naming the array,
            the object and the samples affected.
    """
    s = check_token_store(path_or_url)
    if s["problems"]:
        raise StoreValidationError(str(path_or_url), s["problems"])
    s.pop("problems")
    return s


def local_path(path_or_url: str | Path) -> Path | None:
    """The local path of a store, or ``None`` for a remote URL."""
    s = str(path_or_url)
    return None if "://" in s and not s.startswith("file://") else Path(s.removeprefix("file://"))
