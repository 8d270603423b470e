"""Point-cloud tokenizer of AvatarPointillist (paper section 3.2): yzx order, 1024 bins, binding tokens.

A canonical point cloud of ``N`` points with face bindings becomes ``4N + 8`` tokens::

    S S S S  x1 y1 z1 b1  x2 y2 z2 b2 ... xN yN zN bN  E E E E

* points are sorted by their quantised ``(y, z, x)`` ascending (bottom to top), ties by
  binding, so one point set gives one sequence whatever its input order;
* each axis is quantised to ``num_bins = 1024`` levels over a dataset-wide box
  (:class:`QuantBox`) by exact rational binning, ``q = floor((p - lo) * num_bins / (hi - lo))``
  of the float64 values of ``p``, ``lo`` and ``hi`` (:func:`quantize`); bin ``q`` decodes to
  its float64 centre ``lo + (q + 1/2) (hi - lo) / num_bins``, so the round-trip error is at
  most half a bin per axis (plus float64 round-off);
* binding token ``= num_bins + face index`` (``[1024, 11167]`` for FLAME with teeth);
* special tokens follow the binding range: ``start = num_bins + num_faces``, ``end``,
  ``pad``; vocabulary ``num_bins + num_faces + 3`` (11171 for FLAME with teeth).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from .errors import PointillistError

__all__ = ["Vocabulary", "QuantBox", "TokenGrammarError", "OutOfBoxError", "encode", "decode", "check_grammar",
           "quantize", "dequantize", "FRAME", "DEFAULT_BOX"]

FRAME = 4  # start / end tokens, one "point" worth each


class TokenGrammarError(PointillistError, ValueError):
    """A token sequence breaks the grammar; ``position`` is the first bad index."""

    def __init__(self, position: int, problem: str) -> None:
        self.position = position
        super().__init__(f"token {position}: {problem}")


class OutOfBoxError(PointillistError, ValueError):
    """Points fall outside the quantisation box (and ``out_of_box='error'``)."""


@dataclass(frozen=True)
class Vocabulary:
    """Token ids for ``num_bins`` coordinate levels and ``num_faces`` binding targets."""

    num_bins: int = 1024
    num_faces: int = 10144

    def __post_init__(self) -> None:
        if self.num_bins < 2 or self.num_faces < 1:
            raise ValueError(f"invalid vocabulary {self}")
        if self.size > np.iinfo(np.uint16).max + 1:
            raise ValueError(f"vocabulary of {self.size} tokens does not fit uint16")

    @property
    def binding_offset(self) -> int:
        return self.num_bins

    @property
    def start(self) -> int:
        return self.num_bins + self.num_faces

    @property
    def end(self) -> int:
        return self.start + 1

    @property
    def pad(self) -> int:
        return self.start + 2

    @property
    def size(self) -> int:
        return self.num_bins + self.num_faces + 3

    def to_dict(self) -> dict:
        return {**asdict(self), "start": self.start, "end": self.end, "pad": self.pad, "size": self.size}


@dataclass(frozen=True)
class QuantBox:
    """Axis-aligned quantisation box in the canonical FLAME frame (metres)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, float), np.asarray(self.hi, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) or not np.all(hi > lo):
            raise ValueError(f"invalid quantisation box lo={self.lo} hi={self.hi}")

    def bin_size(self, num_bins: int) -> np.ndarray:
        return (np.asarray(self.hi) - np.asarray(self.lo)) / num_bins

    def to_dict(self) -> dict:
        return {"lo": list(map(float, self.lo)), "hi": list(map(float, self.hi))}

    @classmethod
    def from_dict(cls, d: dict) -> QuantBox:
        return cls(tuple(d["lo"]), tuple(d["hi"]))

    @classmethod
    def around(cls, points: np.ndarray, margin: float = 0.01) -> QuantBox:
        """The bounding box of ``points (N, 3)`` grown by ``margin`` metres on each side."""
        return cls(tuple(points.min(0) - margin), tuple(points.max(0) + margin))


# FLAME with hair and shoulders fits inside: x, z in [-0.2, 0.2], y in [-0.26, 0.2] (metres).
DEFAULT_BOX = QuantBox((-0.2, -0.26, -0.2), (0.2, 0.2, 0.2))


# Float64 evaluation of the binning formula is off by at most a few ulps (below 1e-12 of a
# bin for |value| <= 2 * num_bins); values this close to an integer are re-binned exactly.
_EDGE_TOL = 1e-9


def _exact_floor(p: float, lo: float, hi: float, num_bins: int) -> int:
    return math.floor((Fraction(p) - Fraction(lo)) * num_bins / (Fraction(hi) - Fraction(lo)))


def quantize(points: np.ndarray, box: QuantBox, num_bins: int = 1024,
             out_of_box: Literal["error", "clamp"] = "error") -> np.ndarray:
    """Bin indices ``(N, 3)`` int64 in ``[0, num_bins)`` of ``points (N, 3)`` (metres).

    Definition (the data format's): per axis, ``q = floor((p - lo) * num_bins / (hi - lo))``
    evaluated **exactly** on the float64 values of ``p``, ``lo`` and ``hi`` (as rational
    numbers), then clipped to ``[0, num_bins - 1]`` (so ``p == hi`` falls in the last bin).
    It is computed in float64 and every value within ``1e-9`` of a bin edge is re-binned
    with :class:`fractions.Fraction`, so no point lands one bin off at a bin edge whatever
    the box (a precomputed float bin width cannot promise that in non-dyadic boxes).

    Raises:
        OutOfBoxError: a point lies outside the box and ``out_of_box='error'``
            (with ``'clamp'`` it is clamped and a warning counts the points).
        ValueError: non-finite points.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"point {int(np.flatnonzero(~np.isfinite(p).all(1))[0])} is not finite")
    lo, hi = np.asarray(box.lo, dtype=np.float64), np.asarray(box.hi, dtype=np.float64)
    outside = ((p < lo) | (p > hi)).any(1)
    if outside.any():
        if out_of_box == "error":
            i = int(np.flatnonzero(outside)[0])
            raise OutOfBoxError(f"{int(outside.sum())} point(s) outside the quantisation box {box.to_dict()}, "
                                f"first: index {i} at {p[i].tolist()}")
        warnings.warn(f"clamped {int(outside.sum())} point(s) outside the quantisation box", stacklevel=2)
        p = np.clip(p, lo, hi)
    x = (p - lo) * num_bins / (hi - lo)
    q = np.floor(x)
    for i, a in zip(*np.nonzero(np.abs(x - np.rint(x)) < _EDGE_TOL), strict=True):
        q[i, a] = _exact_floor(float(p[i, a]), float(lo[a]), float(hi[a]), num_bins)
    return np.clip(q.astype(np.int64), 0, num_bins - 1)


def dequantize(q: np.ndarray, box: QuantBox, num_bins: int = 1024) -> np.ndarray:
    """Bin centres ``(N, 3)`` float64 of bin indices ``q (N, 3)``:
    ``lo + (q + 1/2) * (hi - lo) / num_bins`` evaluated in float64 (within one float64
    rounding of the exact centre; float32 centres would be up to ~3e-4 bin off)."""
    lo, hi = np.asarray(box.lo, dtype=np.float64), np.asarray(box.hi, dtype=np.float64)
    return lo + (np.asarray(q, dtype=np.float64) + 0.5) * (hi - lo) / num_bins


def sort_order(q: np.ndarray, binding: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Permutation sorting by quantised (y, z, x), then binding (one int64 key, stable)."""
    nb = vocab.num_bins
    key = ((q[:, 1] * nb + q[:, 2]) * nb + q[:, 0]) * vocab.num_faces + binding
    return np.argsort(key, kind="stable")


def encode(points: np.ndarray, binding: np.ndarray, box: QuantBox = DEFAULT_BOX, vocab: Vocabulary = Vocabulary(),
           out_of_box: Literal["error", "clamp"] = "error", return_order: bool = False):
    """Tokenize a point cloud.

    Args:
        points: ``(N, 3)`` canonical global positions (metres), finite.
        binding: ``(N,)`` face indices in ``[0, vocab.num_faces)``.
        box: the dataset's quantisation box.
        vocab: vocabulary (bins and faces).
        out_of_box: ``"error"`` or ``"clamp"`` (with a counted warning).
        return_order: also return the permutation applied to the points.

    Returns:
        ``tokens (4N + 8,)`` uint16 (and ``order (N,)`` int64 when asked).

    Raises:
        ValueError: empty cloud, mismatched lengths, non-finite points, binding out of range.
        OutOfBoxError: see ``out_of_box``.
    """
    b = np.asarray(binding)
    if len(points) == 0:
        raise ValueError("cannot tokenize an empty point cloud")
    if b.shape != (len(points),):
        raise ValueError(f"binding must be ({len(points)},), got {b.shape}")
    b = b.astype(np.int64)
    if b.min() < 0 or b.max() >= vocab.num_faces:
        i = int(np.flatnonzero((b < 0) | (b >= vocab.num_faces))[0])
        raise ValueError(f"binding {int(b[i])} of point {i} outside [0, {vocab.num_faces})")
    q = quantize(points, box, vocab.num_bins, out_of_box)
    order = sort_order(q, b, vocab)
    N = len(b)
    tokens = np.empty(4 * N + 2 * FRAME, dtype=np.uint16)
    tokens[:FRAME] = vocab.start
    tokens[-FRAME:] = vocab.end
    body = tokens[FRAME:-FRAME].reshape(N, 4)
    body[:, :3] = q[order]
    body[:, 3] = b[order] + vocab.binding_offset
    return (tokens, order) if return_order else tokens


def check_grammar(tokens: np.ndarray, vocab: Vocabulary = Vocabulary(), check_order: bool = True) -> None:
    """Raise :class:`TokenGrammarError` at the first token that breaks the grammar: framing
    (4 start, 4 end), x / y / z in ``[0, num_bins)``, binding in range, and (with
    ``check_order``) non-decreasing (y, z, x, binding) between consecutive points."""
    t = np.asarray(tokens)
    n = len(t)
    if n < 2 * FRAME or (n - 2 * FRAME) % 4:
        raise TokenGrammarError(min(n, max(0, n - 1)), f"length {n} is not 4N + 8")
    bad = np.flatnonzero(t[:FRAME] != vocab.start)
    if bad.size:
        raise TokenGrammarError(int(bad[0]), f"expected start token {vocab.start}, got {int(t[bad[0]])}")
    body = t[FRAME : n - FRAME].astype(np.int64).reshape(-1, 4)
    coord_bad = (body[:, :3] < 0) | (body[:, :3] >= vocab.num_bins)
    bind_bad = (body[:, 3] < vocab.binding_offset) | (body[:, 3] >= vocab.binding_offset + vocab.num_faces)
    flat_bad = np.concatenate([coord_bad, bind_bad[:, None]], 1).reshape(-1)
    if flat_bad.any():
        i = int(np.flatnonzero(flat_bad)[0])
        kind = "xyzb"[i % 4]
        want = f"[0, {vocab.num_bins})" if kind != "b" else f"[{vocab.binding_offset}, {vocab.binding_offset + vocab.num_faces})"
        raise TokenGrammarError(FRAME + i, f"{kind} token {int(body.reshape(-1)[i])} outside {want}")
    bad = np.flatnonzero(t[n - FRAME :] != vocab.end)
    if bad.size:
        raise TokenGrammarError(n - FRAME + int(bad[0]), f"expected end token {vocab.end}")
    if check_order and len(body) > 1:
        nb = vocab.num_bins
        key = ((body[:, 1] * nb + body[:, 2]) * nb + body[:, 0]) * (vocab.num_faces + nb) + body[:, 3]
        dec = np.flatnonzero(np.diff(key) < 0)
        if dec.size:
            raise TokenGrammarError(FRAME + 4 * (int(dec[0]) + 1), "point out of yzx order")


def decode(tokens: np.ndarray, box: QuantBox = DEFAULT_BOX, vocab: Vocabulary = Vocabulary(),
           check_order: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Detokenize: ``points (N, 3)`` float64 bin centres (:func:`dequantize`) and ``binding (N,)`` int64.

    Raises:
        TokenGrammarError: naming the first bad position (see :func:`check_grammar`).
    """
    check_grammar(tokens, vocab, check_order)
    body = np.asarray(tokens)[FRAME:-FRAME].astype(np.int64).reshape(-1, 4)
    return dequantize(body[:, :3], box, vocab.num_bins), body[:, 3] - vocab.binding_offset
