"""The sampler before issue 16, kept only as the baseline of ``benchmarks/bench_ar.py``.

It is the x-transformers cache path: every step runs ``TransformerWrapper.forward`` with the
growing ``cache`` (concatenated keys re-rotated each step), rebuilds full-vocabulary grammar
masks and samples with full sorts. Not part of the package: use
:func:`pointillist_model.generate.sample_points`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pointillist_data.tokens import FRAME, Vocabulary

__all__ = ["baseline_sample_points"]


@dataclass
class GenerationResult:
    """``tokens`` list of ``(4N + 8,)`` int64 sequences; ``hidden`` list of ``(4N, dim)``
    final hidden states of the point tokens (inputs of the Gaussian decoder)."""

    tokens: list[Tensor]
    hidden: list[Tensor]


class GrammarState:
    """Per-sequence grammar state for a batch and the mask of legal next tokens."""

    def __init__(self, batch: int, vocab: Vocabulary, max_points: int, device, min_points: int = 1) -> None:
        self.v, self.max_points, self.min_points, self.dev = vocab, max_points, max(1, min_points), device
        self.n_body = torch.zeros(batch, dtype=torch.long, device=device)  # body tokens emitted
        self.prev = torch.full((batch, 4), -1, dtype=torch.long, device=device)  # previous point (x, y, z, b)
        self.cur = torch.zeros(batch, 4, dtype=torch.long, device=device)
        self.ends = torch.zeros(batch, dtype=torch.long, device=device)  # end tokens emitted

    @property
    def done(self) -> Tensor:
        return self.ends >= FRAME

    def mask(self) -> Tensor:
        """``(B, vocab)`` bool of legal next tokens."""
        v, nb = self.v, self.v.num_bins
        B = self.n_body.shape[0]
        ar = torch.arange(v.size, device=self.dev)[None]
        coord = ar < nb
        bind = (ar >= nb) & (ar < nb + v.num_faces)
        slot = (self.n_body % 4)[:, None]
        has_prev = (self.prev[:, :1] >= 0)
        px, py, pz, pb = (self.prev[:, k : k + 1] for k in range(4))
        x, y, z = self.cur[:, 0:1], self.cur[:, 1:2], self.cur[:, 2:3]
        val = ar  # coordinate value for coordinate tokens
        # a previous point at y = z = max leaves only y = z = max, which needs x >= its x
        m_x = coord & ~(has_prev & (py == nb - 1) & (pz == nb - 1) & (val < px))
        y_eq_ok = (pz < nb - 1) | (x >= px)
        m_y = coord & (~has_prev | (val > py) | ((val == py) & y_eq_ok))
        same_y = has_prev & (y == py)
        m_z = coord & (~same_y | (val > pz) | ((val == pz) & (x >= px)))
        same_yzx = has_prev & (y == py) & (z == pz) & (x == px)
        m_b = bind & (~same_yzx | ((ar - nb) >= pb))
        at_boundary = slot == 0
        full = (self.n_body // 4 >= self.max_points)[:, None]
        can_end = at_boundary & (self.n_body // 4 >= self.min_points)[:, None]
        m = torch.where(slot == 0, m_x & ~full, torch.where(slot == 1, m_y, torch.where(slot == 2, m_z, m_b)))
        m = m | (can_end & (ar == v.end))
        ending = ((self.ends > 0) & ~self.done)[:, None]
        m = torch.where(ending, ar == v.end, m)  # finish the 4 end tokens
        m = torch.where(self.done[:, None], ar == v.pad, m)  # finished rows wait with PAD
        return m.reshape(B, v.size)

    def update(self, tok: Tensor) -> None:
        """Advance with the sampled tokens ``(B,)``."""
        v = self.v
        was_done = self.done.clone()
        is_end = (tok == v.end) & ~was_done
        self.ends = self.ends + is_end.long()
        body = ~is_end & ~was_done & (self.ends == 0)
        slot = self.n_body % 4
        idx = torch.nonzero(body).squeeze(1)
        if idx.numel():
            s = slot[idx]
            val = torch.where(s == 3, tok[idx] - v.num_bins, tok[idx])
            self.cur[idx, s] = val
            fin = idx[s == 3]
            self.prev[fin] = self.cur[fin]
            self.n_body[idx] += 1


def _filter(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if top_p is not None and top_p < 1.0:
        sorted_l, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_l, -1)
        remove = probs.cumsum(-1) - probs > top_p
        sorted_l = sorted_l.masked_fill(remove, -float("inf"))
        logits = torch.full_like(logits, -float("inf")).scatter(-1, idx, sorted_l)
    return logits


@torch.no_grad()
def baseline_sample_points(model, context: Tensor, max_points: int = 1000, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, greedy: bool = False, cache_kv: bool = True,
                  generator: torch.Generator | None = None, return_hidden: bool = True,
                  min_points: int = 1) -> GenerationResult:
    """Sample one sequence per context row.

    Args:
        model: :class:`PointillistAR` (eval mode is set here).
        context: ``(B, N, dim)`` conditioning.
        max_points: longest cloud; ``end`` is forced after it.
        temperature, top_k, top_p: sampling controls (ignored when ``greedy``).
        cache_kv: use the KV cache (False recomputes the whole prefix each step; for tests).
        min_points: ``end`` is not allowed before this many points.

    Returns:
        :class:`GenerationResult`; every sequence passes the grammar check.
    """
    if max_points < 1:
        raise ValueError("max_points must be >= 1")
    model.eval()
    net, v = model.net, model.config.vocab
    B, dev = context.shape[0], context.device
    out = torch.full((B, FRAME), v.start, dtype=torch.long, device=dev)
    state = GrammarState(B, v, max_points, dev, min(min_points, max_points))
    cache = None
    hiddens = []
    L = model.config.max_seq_len
    while not bool(state.done.all()):
        x = out
        if out.shape[1] > L:
            x = out[:, -L:]
            if cache is not None:
                for inter in cache.attn_intermediates:
                    if inter.layer_type == "a":
                        inter.cached_kv = [t[..., -(L - 1):, :] for t in inter.cached_kv]
        logits, inter = net(x, context=context, return_intermediates=True, cache=cache if cache_kv else None)
        if cache_kv:
            cache = inter
        if return_hidden:
            hiddens.append(inter.last_layer_hiddens[:, -1])
        lg = logits[:, -1].float().masked_fill(~state.mask(), -float("inf"))
        if greedy:
            tok = lg.argmax(-1)
        else:
            probs = torch.softmax(_filter(lg, top_k, top_p) / max(temperature, 1e-6), -1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        state.update(tok)
        out = torch.cat([out, tok[:, None]], 1)
    seqs, hid = [], []
    H = torch.stack(hiddens, 1) if hiddens else None  # hidden state that produced token t+FRAME
    for b in range(B):
        n = FRAME + 4 * int(state.n_body[b] // 4) + FRAME
        seqs.append(out[b, :n].cpu())
        if H is not None:
            # the hidden state *at* point token j is the one computed when that token was input:
            # step k consumed out[:, :FRAME + k] and its last position is token FRAME + k - 1
            hid.append(H[b, 1 : 1 + 4 * int(state.n_body[b] // 4)].cpu())
    return GenerationResult(seqs, hid)
