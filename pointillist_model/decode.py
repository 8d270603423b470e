"""One-token decode steps of the trained x-transformers decoder with a static, rolling KV cache.

:class:`StaticKVDecoder` runs the weights of :class:`~pointillist_model.ar.PointillistAR`'s
``x_transformers.TransformerWrapper`` (pre-norm RMSNorm, rotary self-attention, cross-attention
to the conditioning context, GELU feed-forward; checked by :func:`decoder_plan`) layer by
layer, one token per row and step. The checkpoints load unchanged and nothing is converted on
disk: the decoder keeps views of the model's parameters; only the self-attention Q/K/V
projections (concatenated) and the RMSNorm gains (times ``sqrt(dim)``) are copied in memory.

Attention window, precisely. Let ``L = max_seq_len`` (the training window). The token at
position ``i`` attends, in every self-attention layer, to the keys and values of positions
``j`` with ``i - L < j <= i`` (causal band of width ``L``): inside the window (``i < L``) this
is the model's ordinary causal forward pass; past it, it is the full forward pass with the
sliding-window mask ``0 <= i - j < L``, which the cache reproduces exactly because the keys and
values of position ``j`` are computed once, when ``j`` is decoded, from its own band - the same
thing the masked full pass computes. Relative distances ``i - j`` therefore stay in
``[0, L)``, the ones a training window contains.

Rotary positions. RoPE makes every attention score depend on ``i - j`` only, so keys may be
cached already rotated at their absolute position and need no re-rotation when the window
rolls. What must not happen is the float32 rounding of ``position * inv_freq`` that
x-transformers' own table suffers at large positions (about ``ulp(i)`` radians, 0.004 rad at
``i = 1e5``, against at most 5e-4 rad inside a 12000-token training window): angles are formed
in float64 from the model's ``inv_freq`` and only their cosine and sine are rounded, so a query
at any position scores its window to float32 precision exactly as a query at the same offset
inside a training window (``tests/test_generate.py`` checks a shift by a million positions).
Re-rotating the cached keys relative to the window start, as x-transformers does when its own
cache is trimmed, gives the same scores in exact arithmetic at the cost of rotating the whole
window every step.

Static shapes: the caches ``(rows, 2, heads, L, dim_head)`` are preallocated and written at
slot ``position mod L``; a row attends to all ``L`` slots under a validity mask (slot ``s`` is
valid when ``s <= position``), so one step has the same shapes at every position and is
capturable by CUDA graphs and ``torch.compile(mode="reduce-overhead")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointillist_data.errors import PointillistError

__all__ = ["StaticKVDecoder", "UnsupportedDecoderError", "decoder_plan", "LayerSpec", "single_query_attention",
           "ATTENTION_KERNELS"]

ATTENTION_KERNELS = ("sdpa", "explicit")


class UnsupportedDecoderError(PointillistError, ValueError):
    """The x-transformers decoder uses an option the static decode path does not reproduce."""


@dataclass
class LayerSpec:
    """One decoder layer: ``kind`` is ``a`` (self-attention), ``c`` (cross-attention) or ``f``
    (feed-forward); ``norm`` the pre-norm RMSNorm gain times ``sqrt(dim)`` ``(dim,)``;
    ``weights`` the projections."""

    kind: str
    norm: Tensor
    weights: dict[str, Tensor]


def _fail(what: str) -> None:
    raise UnsupportedDecoderError(f"model.net: {what} is not supported by the static decode path")


def _check_attention(attn) -> None:
    flags = {"num_mem_kv": attn.num_mem_kv, "qk_norm": attn.qk_norm, "head_scale": attn.head_scale,
             "laser": attn.laser, "use_latent_q": attn.use_latent_q, "use_latent_kv": attn.use_latent_kv,
             "orthog_projected_values": attn.orthog_projected_values or attn.orthog_projected_values_per_head,
             "sparse_topk": attn.sparse_topk, "qkv_receive_diff_residuals": attn.qkv_receive_diff_residuals}
    for name, val in flags.items():
        if val:
            _fail(f"attention option {name}={val}")
    for name in ("q_rmsnorm", "k_rmsnorm", "value_rmsnorm", "to_v_head_gate", "hybrid_module", "to_v_gate",
                 "to_output_gate", "data_dependent_alibi", "rel_proj_pos_bias", "sublayer_dropout"):
        if getattr(attn, name, None) is not None:
            _fail(f"attention option {name}")
    if attn.kv_heads != attn.heads or attn.rotate_num_heads != attn.heads:
        _fail("grouped key/value heads or partially rotated heads")
    if not isinstance(attn.to_out, nn.Linear) or attn.to_out.bias is not None:
        _fail("an attention output projection other than a bias-free Linear")
    a = attn.attend
    for name in ("pre_softmax_talking_heads", "post_softmax_talking_heads", "pre_scale_post_talking_heads"):
        if getattr(a, name, None) is not None:
            _fail(f"attend option {name}")
    if getattr(a, "softclamp_logits", False) or getattr(a, "selective", False) or getattr(a, "sigmoid", False):
        _fail("soft-clamped, selective or sigmoid attention")
    if a.scale is not None and abs(a.scale - attn.scale) > 0:
        _fail("a custom attention scale")


def _gain(norm) -> Tensor:
    # x-transformers' RMSNorm: F.normalize(x) * sqrt(dim) * (g + unit_offset) (unit_offset is on by default)
    return (norm.g.detach() + float(norm.unit_offset)) * norm.scale


def decoder_plan(net) -> tuple[list[LayerSpec], dict]:
    """The layers of an ``x_transformers.TransformerWrapper`` as :class:`LayerSpec` s, and its
    globals (token embedding, final norm, logits projection, rotary ``inv_freq``, heads,
    dim_head, rotary dim).

    Raises:
        UnsupportedDecoderError: an option whose forward pass this module does not reproduce
            (checked against x-transformers 2.x: ``Decoder(rotary_pos_emb=True, use_rmsnorm=True,
            cross_attend=True)`` and the defaults of everything else).
    """
    from x_transformers.x_transformers import (
        Attention,
        FeedForward,
        Residual,
        RMSNorm,
        RotaryEmbedding,
        always,
    )

    def identity(m) -> bool:  # torch's or torch_einops_utils' Identity
        return type(m).__name__ == "Identity"

    layers = net.attn_layers
    if net.num_memory_tokens or getattr(net, "cls_token", None) is not None or not isinstance(net.to_logits, nn.Linear):
        _fail("memory tokens, a CLS token or a non-linear logits head")
    if not identity(net.post_emb_norm) or not identity(net.project_emb) or net.token_emb.l2norm_embed \
            or not (isinstance(net.pos_emb, always) and net.pos_emb.val == 0):
        _fail("embedding options (post-embedding norm, projection, l2-normed or absolute positions)")
    rot = layers.rotary_pos_emb
    if not isinstance(rot, RotaryEmbedding) or rot.scale is not None or rot.interpolation_factor != 1:
        _fail("a positional scheme other than plain rotary embeddings")
    if not layers.pre_norm or layers.add_value_residual or layers.residual_attn or layers.cross_residual_attn \
            or layers.num_residual_streams != 1 or not isinstance(layers.final_norm, RMSNorm):
        _fail("post-norm, value or attention residuals, hyper-connections or a final norm other than RMSNorm")
    plan: list[LayerSpec] = []
    heads = dim_head = None
    for kind, (norms, block, residual), skip, integ in zip(layers.layer_types, layers.layers, layers.skip_combines,
                                                           layers.layer_integrators, strict=True):
        pre, post_branch, post_main = norms
        if not isinstance(pre, RMSNorm) or post_branch is not None or post_main is not None:
            _fail(f"layer norms of a '{kind}' layer other than one pre-norm RMSNorm")
        if type(residual) is not Residual or residual.residual_scale is not None or residual.scale_residual_constant != 1:
            _fail("a residual other than a plain sum")
        if skip is not None or integ is not None:
            _fail("skip connections or layer integration")
        if kind in ("a", "c"):
            if not isinstance(block, Attention):
                _fail(f"a '{kind}' block of type {type(block).__name__}")
            _check_attention(block)
            heads, dim_head = block.heads, block.to_q.out_features // block.heads
            if kind == "a":
                w = {"qkv": torch.cat([block.to_q.weight, block.to_k.weight, block.to_v.weight]).detach(),
                     "out": block.to_out.weight.detach()}
            else:
                w = {"q": block.to_q.weight.detach(), "k": block.to_k.weight.detach(), "v": block.to_v.weight.detach(),
                     "out": block.to_out.weight.detach()}
        elif kind == "f":
            if not isinstance(block, FeedForward):
                _fail(f"an 'f' block of type {type(block).__name__}")
            mods = [m for m in block.ff.modules() if not isinstance(m, (nn.Sequential, nn.Dropout))]
            if len(mods) != 3 or not isinstance(mods[0], nn.Linear) or type(mods[1]) is not nn.GELU \
                    or mods[1].approximate != "none" or not isinstance(mods[2], nn.Linear):
                _fail("a feed-forward other than Linear -> GELU -> Linear")
            w = {"w1": mods[0].weight.detach(), "b1": mods[0].bias.detach() if mods[0].bias is not None else None,
                 "w2": mods[2].weight.detach(), "b2": mods[2].bias.detach() if mods[2].bias is not None else None}
        else:
            _fail(f"layer type '{kind}'")
        plan.append(LayerSpec(kind, _gain(pre), w))
    glob = {"emb": net.token_emb.emb.weight.detach(), "final_norm": _gain(layers.final_norm),
            "logits_w": net.to_logits.weight.detach(),
            "logits_b": net.to_logits.bias.detach() if net.to_logits.bias is not None else None,
            "inv_freq": rot.inv_freq.detach(), "heads": heads, "dim_head": dim_head, "rot_dim": 2 * rot.inv_freq.numel()}
    return plan, glob


def _linear(x: Tensor, wt: Tensor, b: Tensor | None) -> Tensor:
    """``x @ wt (+ b)`` with ``wt`` a transposed weight ``(in, out)``."""
    return torch.mm(x, wt) if b is None else torch.addmm(b, x, wt)


def _rms(x: Tensor, g: Tensor) -> Tensor:
    # x-transformers: F.normalize(x) * sqrt(dim) * gain; ``g`` holds sqrt(dim) * gain
    return x * (g / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12))


def single_query_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor | None = None) -> Tensor:
    """Attention of one query per row and head, written as products and reductions.

    ``softmax(q k^T / sqrt(dim_head)) v`` for ``q (B, H, 1, dim_head)``, ``k, v (B, H, N,
    dim_head)`` and ``valid (B, 1, 1, N)`` bool (``False``: key masked; ``None``: all keys),
    returning ``(B, H, 1, dim_head)`` in ``q``'s dtype; every row needs one valid key. It is
    ``F.scaled_dot_product_attention`` with a boolean mask (the reference it is tested
    against), in a form ``torch.compile``'s CPU backend fuses with the rotary embedding and the
    cache write around it into one C++ loop nest, where a call of the library's flash kernel
    costs its own dispatch, allocations and small matrix products per block of keys: the tiny
    preset's compiled decode step is ~25 % faster with it (``BENCHMARKS.md``). Eagerly it
    would materialise ``(B, H, N, dim_head)`` products, so the eager path keeps SDPA.
    """
    s = (q * k).sum(-1, keepdim=True) * q.shape[-1] ** -0.5  # (B, H, N, 1)
    if valid is not None:
        s = s.masked_fill(~valid.transpose(-1, -2), -float("inf"))
    return (s.softmax(-2) * v).sum(-2, keepdim=True)


class StaticKVDecoder(nn.Module):
    """Decode one token per row per call with preallocated, rolling self-attention caches.

    Args:
        model: a :class:`~pointillist_model.ar.PointillistAR` (its ``net`` must pass
            :func:`decoder_plan`); its weight matrices are shared, not copied, except the Q/K/V
            projections of each self-attention layer, concatenated once into one matrix.
        rows: batch rows (avatars decoded together).
        context_len: conditioning tokens per row (``model.context(...).shape[1]``).
        dtype: compute and cache dtype (default: the model's parameter dtype); weights are cast
            when it differs.
        attention: ``sdpa`` (``F.scaled_dot_product_attention``: eager steps, CUDA) or
            ``explicit`` (:func:`single_query_attention`: steps compiled for the CPU).

    Buffers (on the model's device): per self-attention layer ``i``, ``l{i}_kv`` ``(rows, 2,
    heads, L, dim_head)`` (keys, values); per cross-attention layer, the projected context
    ``(rows, 2, heads, context_len, dim_head)`` (set by :meth:`set_context`).

    Source: the forward pass of ``x_transformers.TransformerWrapper`` / ``AttentionLayers`` /
    ``Attention`` (x-transformers 2.x), rewritten for one cached token.
    """

    def __init__(self, model, rows: int, context_len: int, dtype: torch.dtype | None = None,
                 attention: str = "sdpa") -> None:
        super().__init__()
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention must be one of {ATTENTION_KERNELS}, got {attention!r}")
        self.attention = attention  # may be switched between steps (same results to rounding)
        plan, glob = decoder_plan(model.net)
        ref = glob["emb"]
        self.dtype = dtype or ref.dtype
        self.window = int(model.config.max_seq_len)
        self.heads, self.dim_head, self.rot_dim = glob["heads"], glob["dim_head"], glob["rot_dim"]
        self.kinds = [s.kind for s in plan]
        weights = {name: glob[name] for name in ("emb", "final_norm", "logits_w", "logits_b")}
        for i, spec in enumerate(plan):
            weights[f"l{i}_norm"] = spec.norm
            weights.update({f"l{i}_{k}": t for k, t in spec.weights.items()})
        for name, t in weights.items():  # buffers: static addresses for CUDA graphs; not in state_dict
            t = t if t is None or t.dtype == self.dtype else t.to(self.dtype)
            # matrices as transposed views (in, out): x @ W^T is one mm / addmm call
            self.register_buffer(name, t.t() if t is not None and t.dim() == 2 and name != "emb" else t,
                                 persistent=False)
        H, dh, L, dev = self.heads, self.dim_head, self.window, ref.device
        for i, kind in enumerate(self.kinds):  # keys and values together: one write per layer and step
            if kind in ("a", "c"):
                n = L if kind == "a" else context_len
                self.register_buffer(f"l{i}_kv", torch.zeros(rows, 2, H, n, dh, dtype=self.dtype, device=dev),
                                     persistent=False)
        self.register_buffer("slots", torch.arange(L, device=dev).view(1, 1, 1, L), persistent=False)
        self.register_buffer("row_ids", torch.arange(rows, device=dev), persistent=False)
        # rotary frequencies for q, k and v (v unrotated: angle 0) over the full head width (the dims
        # past rot_dim, which x-transformers leaves unrotated, get angle 0 too)
        inv = F.pad(glob["inv_freq"].double().repeat_interleave(2), (0, dh - self.rot_dim))  # pairs share a frequency
        self.register_buffer("freq_qkv", torch.stack((inv, inv, torch.zeros_like(inv)))[:, None].to(dev),
                             persistent=False)
        sign = F.pad(torch.tensor([-1.0, 1.0], dtype=torch.float64).repeat(self.rot_dim // 2), (0, dh - self.rot_dim),
                     value=1.0)
        self.register_buffer("sign", sign.to(dev), persistent=False)
        swap = torch.arange(dh)
        swap[: self.rot_dim] = swap[: self.rot_dim].view(-1, 2).flip(-1).flatten()
        self.register_buffer("pair_swap", swap.to(dev), persistent=False)

    @property
    def rows(self) -> int:
        return self.row_ids.shape[0]

    @torch.no_grad()
    def set_context(self, rows: Tensor, context: Tensor) -> None:
        """Project ``context (len(rows), N, dim)`` to the cross-attention keys/values of ``rows``."""
        b, n = context.shape[:2]
        context = context.to(self.dtype)
        for i, kind in enumerate(self.kinds):
            if kind == "c":
                k, v = ((context @ getattr(self, f"l{i}_{w}")).view(b, n, self.heads, self.dim_head)
                        for w in ("k", "v"))
                getattr(self, f"l{i}_kv")[rows] = torch.stack((k, v), 1).transpose(2, 3)

    @torch.no_grad()
    def select_rows(self, rows: Tensor) -> None:
        """Keep only ``rows`` (compaction of a batch whose other rows have finished)."""
        for i, kind in enumerate(self.kinds):
            if kind in ("a", "c"):
                setattr(self, f"l{i}_kv", getattr(self, f"l{i}_kv").index_select(0, rows))
        self.row_ids = self.row_ids[: len(rows)]

    def _rope(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        # float64 angles: exact at any position, only cos / sin are rounded (see the module docstring)
        ang = pos[:, None, None, None] * self.freq_qkv  # (B, 3, 1, dim_head) for q, k, v
        return ang.cos().float(), (ang.sin() * self.sign).float()

    def _rotate(self, t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        # x-transformers' interleaved RoPE: (t1, t2) -> (t1 cos - t2 sin, t2 cos + t1 sin), in float32;
        # dims with angle 0 come out unchanged (x * 1 + y * 0)
        r = t if t.dtype == torch.float32 else t.float()
        out = torch.addcmul(r * cos, r.index_select(-1, self.pair_swap), sin)
        return out if t.dtype == torch.float32 else out.to(t.dtype)

    def logits(self, h: Tensor) -> Tensor:
        """Full-vocabulary logits ``(B, vocab)`` float32 of final hidden states ``h (B, dim)``."""
        return _linear(h, self.logits_w, self.logits_b).float()

    def forward(self, tok: Tensor, pos: Tensor, span: int | None = None, full: bool = False) -> Tensor:
        """One step: feed ``tok (B,)`` int64 at ``pos (B,)`` int64 (positions in its sequence).

        Writes the token's keys/values to slot ``pos mod L`` of every self-attention cache and
        returns the final hidden state ``(B, dim)`` (after the final RMSNorm: what the logits
        head reads, see :meth:`logits`). Shortcuts that graphs cannot capture (they change
        shapes or skip work by what the caller knows): ``span`` attends to the first ``span``
        slots only, for steps where every position is below ``span``, so that the slots beyond
        hold no valid key yet; ``full`` drops the validity mask, for steps where every position
        is at least ``L - 1``, so that every slot is valid.
        """
        B, H, dh = tok.shape[0], self.heads, self.dim_head
        x = F.embedding(tok, self.emb)
        cos, sin = self._rope(pos)
        slot = torch.remainder(pos, self.window)
        slots = self.slots if span is None or span >= self.window else self.slots[..., :span]
        valid = None if full else slots <= pos[:, None, None, None]  # (B, 1, 1, L)
        n = slots.shape[-1]
        attend = single_query_attention if self.attention == "explicit" else F.scaled_dot_product_attention
        for i, kind in enumerate(self.kinds):
            h = _rms(x, getattr(self, f"l{i}_norm"))
            if kind == "a":
                qkv = self._rotate(torch.mm(h, getattr(self, f"l{i}_qkv")).view(B, 3, H, dh), cos, sin)
                kv = getattr(self, f"l{i}_kv")
                kv[self.row_ids, :, :, slot] = qkv[:, 1:]  # in place on the buffer (no copy when compiled)
                k, v = kv[..., :n, :].unbind(1)
                o = attend(qkv[:, 0, :, None], k, v, valid)
            elif kind == "c":
                q = torch.mm(h, getattr(self, f"l{i}_q")).view(B, H, 1, dh)
                o = attend(q, *getattr(self, f"l{i}_kv").unbind(1))
            else:
                u = F.gelu(_linear(h, getattr(self, f"l{i}_w1"), getattr(self, f"l{i}_b1")))
                x = torch.addmm(x, u, getattr(self, f"l{i}_w2"))  # residual + u W2^T (+ b2)
                b2 = getattr(self, f"l{i}_b2")
                x = x if b2 is None else x + b2
                continue
            x = torch.addmm(x, o.reshape(B, H * dh), getattr(self, f"l{i}_out"))  # residual + o Wout^T
        return _rms(x, self.final_norm)
