"""The token grammar as a few integers per sequence: legal next tokens are one interval.

A sequence is ``S S S S  x y z b  x y z b ...  E E E E`` (:mod:`pointillist_data.tokens`)
with points non-decreasing in (y, z, x, binding). Given the previous point and the part of
the current point drawn so far, the legal values of the next body token always form one
interval ``[lo, hi)`` of its sub-vocabulary (coordinates ``[0, num_bins)``, bindings
``[0, num_faces)``), plus the end token at a point boundary:

* ``x``: ``x >= px`` if the previous point has ``y = z = num_bins - 1`` (the next point must
  then repeat that y and z), else any; no ``x`` once ``max_points`` points exist; ``end``
  once ``min_points`` points exist;
* ``y``: ``y >= py``, and ``y > py`` if equality could not be completed (``pz`` is the largest
  bin and ``x < px``);
* ``z``: if ``y == py``: ``z >= pz`` (``z > pz`` when ``x < px``), else any;
* binding: if ``(y, z, x) == (py, pz, px)``: ``b >= pb``, else any.

Each rule never leaves an empty interval (the previous rule excluded that case), so decoding
never dead-ends. The start tokens, the three end tokens after the first and the PAD of
finished rows are forced. Source of the rules: the order check of
:func:`pointillist_data.tokens.check_grammar`.

Rows advance in lockstep modulo 4 (every sequence is a multiple of 4 tokens and new
sequences start on a multiple of 4), so one step serves one *phase*: the position of the
predicted token modulo 4 (0: x or end, 1: y, 2: z, 3: binding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointillist_data.tokens import FRAME, Vocabulary

__all__ = ["PointGrammar"]


class PointGrammar(nn.Module):
    """Grammar state of ``rows`` sequences (int64 tensors on ``device``).

    State per row: ``pos`` (position of the token fed next), ``ends`` (end tokens emitted),
    ``n_points`` (complete points), ``prev (4,)`` the previous point ``(x, y, z, face)``
    (``-1`` before the first, which makes every rule loose), ``cur (3,)`` the current point's
    ``x, y, z`` so far.
    """

    def __init__(self, rows: int, vocab: Vocabulary, device, min_points: int = 1, max_points: int = 1000) -> None:
        super().__init__()
        if max_points < 1:
            raise ValueError("max_points must be >= 1")
        self.v, self.nb = vocab, vocab.num_bins
        self.min_points, self.max_points = max(1, min(min_points, max_points)), max_points
        # buffers, so that torch.compile(mode="reduce-overhead") sees static addresses
        for name, shape, fill in (("pos", (rows,), 0), ("ends", (rows,), 0), ("n_points", (rows,), 0),
                                  ("prev", (rows, 4), -1), ("cur", (rows, 3), 0)):
            self.register_buffer(name, torch.full(shape, fill, dtype=torch.long, device=device), persistent=False)

    def tensors(self) -> list[str]:
        return ["pos", "ends", "n_points", "prev", "cur"]

    @torch.no_grad()
    def reset_rows(self, rows: Tensor) -> None:
        """Start new sequences in ``rows`` (at position 0, fed a start token)."""
        for name in ("pos", "ends", "n_points", "cur"):
            getattr(self, name)[rows] = 0
        self.prev[rows] = -1

    def select_rows(self, rows: Tensor) -> None:
        for name in self.tensors():
            setattr(self, name, getattr(self, name).index_select(0, rows))

    @property
    def done(self) -> Tensor:
        """``(rows,)`` bool: all four end tokens emitted."""
        return self.ends >= FRAME

    def free(self) -> Tensor:
        """``(rows,)`` bool: the next token is drawn (not a forced start / end / PAD)."""
        return (self.pos >= FRAME - 1) & (self.ends == 0)

    def forced_token(self) -> Tensor:
        """``(rows,)`` int64: the token a non-free row must take next."""
        v = self.v
        return torch.full_like(self.pos, v.end).masked_fill_(self.ends >= FRAME, v.pad) \
            .masked_fill_(self.pos < FRAME - 1, v.start)

    def interval(self, phase: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Legal next body tokens of free rows in ``phase``: ``lo`` and ``hi`` (``(rows,)``, local
        to the phase's sub-vocabulary: coordinates, or faces for phase 3; ``hi`` is ``None`` when
        it is the sub-vocabulary's end) and ``end_ok`` (``(rows,)`` bool; ``None``: no end)."""
        top = self.nb - 1
        if phase == 0:
            px, py, pz = self.prev[:, 0], self.prev[:, 1], self.prev[:, 2]
            lo = torch.where((py == top) & (pz == top), px, 0)
            hi = torch.where(self.n_points >= self.max_points, 0, self.nb)
            return lo, hi, self.n_points >= self.min_points
        if phase == 1:
            px, py, pz = self.prev[:, 0], self.prev[:, 1], self.prev[:, 2]
            return torch.where((pz < top) | (self.cur[:, 0] >= px), py, py + 1).clamp_min(0), None, None
        if phase == 2:
            px, py, pz = self.prev[:, 0], self.prev[:, 1], self.prev[:, 2]
            strict = (self.cur[:, 0] < self.prev[:, 0]).long()
            return torch.where(self.cur[:, 1] == py, pz + strict, 0), None, None
        same = (self.cur == self.prev[:, :3]).all(1)
        return torch.where(same, self.prev[:, 3], 0), None, None

    def advance(self, phase: int, tok: Tensor, free: Tensor | None = None, done: Tensor | None = None) -> None:
        """Record the tokens ``tok (rows,)`` (global ids) just chosen in ``phase`` (in place);
        ``free`` and ``done`` are :meth:`free` and :attr:`done` from before the step, if at hand."""
        free = self.free() if free is None else free
        done = self.done if done is None else done
        is_end = tok == self.v.end
        body = free & ~is_end
        if phase < 3:
            self.cur[:, phase] = torch.where(body, tok, self.cur[:, phase])
        else:
            point = torch.cat((self.cur, (tok - self.v.binding_offset)[:, None]), 1)
            self.prev.copy_(torch.where(body[:, None], point, self.prev))
            self.n_points.add_(body)
        self.ends.add_(is_end)
        self.pos.add_(~done)
