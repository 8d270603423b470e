"""The Gaussian decoder (paper section 4.2, supplementary D): points + AR features -> Gaussians.

Per point ``n``:

* ``P_n``: the de-quantised canonical coordinates, normalised to ``[-1, 1]`` over the
  quantisation box, through NeRF's positional encoding (Mildenhall et al. 2020,
  ``[x, sin(2^k pi x), cos(2^k pi x)]``, ``k < pe_freqs``) and an MLP;
* ``F_n``: the final hidden states of the point's 4 tokens (``x y z binding``) of the frozen
  AR model, concatenated, through an MLP.

``[P_n, F_n]`` is projected to the model width and goes through ``depth`` multi-modal
transformer blocks in LAM's style (SD3's MM-DiT joint blocks): point tokens and image tokens
(the AR model's conditioning context: image features and FLAME point latents) attend
jointly in one attention, with separate normalisation, projection and MLP weights per
modality. Heads give per point an RGB colour in ``[0, 1]``, an opacity in ``[0, 1]``, a
positive scale (metres), a unit rotation quaternion (wxyz) and a position offset (metres,
bounded by ``max_offset``) added to the canonical point. Attention is PyTorch's
``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU, so 30k points fit).

``attention_group``: points attend in groups of at most this many (contiguous in token
order, i.e. slabs in y), each group jointly with all image tokens; ``None`` is the paper's
full joint attention. A point subset of this kind is what lets the tiny preset train on
2 CPU cores; the code path is the same.

Ablations (paper Table 2): ``inputs`` = ``both`` | ``position`` (P only) | ``feature`` (F only);
the "FLAME position" baseline feeds canonical FLAME vertices instead of AR points with
``inputs="position"`` (:func:`flame_vertex_binding` gives their bindings).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointillist_data.tokens import DEFAULT_BOX

from .config import INPUTS

__all__ = ["DecoderConfig", "DECODER_PRESETS", "GaussianDecoder", "DecodedGaussians", "nerf_encoding",
           "flame_vertex_binding", "INPUTS"]



@dataclass
class DecoderConfig:
    """Decoder settings (saved in every checkpoint).

    Attributes:
        dim, depth, heads: transformer width, MM blocks and attention heads.
        ar_dim: width of the AR model's hidden states (``F_n`` sees ``4 * ar_dim``).
        cond_dim: width of the image tokens (the AR model's conditioning context).
        pe_freqs: NeRF positional-encoding frequencies.
        mlp_ratio: MLP hidden width over ``dim``.
        inputs: ``both`` (paper), ``position`` (P only) or ``feature`` (F only).
        box_lo, box_hi: the quantisation box (metres) that normalises coordinates.
        init_scale, max_scale: Gaussian scale at initialisation and its upper bound (metres).
        max_offset: bound on the position offset (metres); the offset regulariser is
            ``mean(|offset|^2) / max_offset^2``.
        init_opacity: opacity at initialisation.
        attention_group: points per attention group (``None``: all points jointly).
    """

    dim: int = 1024
    depth: int = 12
    heads: int = 16
    ar_dim: int = 1024
    cond_dim: int = 1024
    pe_freqs: int = 10
    mlp_ratio: float = 4.0
    inputs: str = "both"
    box_lo: tuple[float, float, float] = field(default_factory=lambda: tuple(DEFAULT_BOX.lo))
    box_hi: tuple[float, float, float] = field(default_factory=lambda: tuple(DEFAULT_BOX.hi))
    init_scale: float = 0.003
    max_scale: float = 0.05
    max_offset: float = 0.01
    init_opacity: float = 0.5
    attention_group: int | None = None

    def __post_init__(self) -> None:
        self.box_lo, self.box_hi = tuple(float(x) for x in self.box_lo), tuple(float(x) for x in self.box_hi)
        if self.dim % self.heads:
            raise ValueError(f"DecoderConfig: dim {self.dim} must be divisible by heads {self.heads}")
        if self.inputs not in INPUTS:
            raise ValueError(f"DecoderConfig.inputs must be one of {INPUTS}, got {self.inputs!r}")
        if not 0 < self.init_scale < self.max_scale or self.max_offset <= 0 or not 0 < self.init_opacity < 1:
            raise ValueError("DecoderConfig: need 0 < init_scale < max_scale, max_offset > 0, 0 < init_opacity < 1")
        if self.attention_group is not None and self.attention_group < 1:
            raise ValueError("DecoderConfig.attention_group must be >= 1 or None")
        if any(h <= lo for lo, h in zip(self.box_lo, self.box_hi, strict=True)):
            raise ValueError("DecoderConfig: box_hi must exceed box_lo on every axis")

    def to_dict(self) -> dict:
        return asdict(self)


DECODER_PRESETS = {
    "paper": DecoderConfig(),
    "tiny": DecoderConfig(dim=64, depth=2, heads=4, ar_dim=64, cond_dim=64, pe_freqs=8, attention_group=1024),
}


class DecodedGaussians(NamedTuple):
    """Canonical Gaussians ``(B, N, ...)``: ``means`` (points + offsets, metres), ``offsets``,
    ``rgb`` in [0, 1], ``opacity (B, N)`` in [0, 1], ``scales`` > 0 (metres), ``quats`` unit wxyz."""

    means: Tensor
    offsets: Tensor
    rgb: Tensor
    opacity: Tensor
    scales: Tensor
    quats: Tensor


def nerf_encoding(x: Tensor, n_freq: int) -> Tensor:
    """NeRF positional encoding ``(..., D) -> (..., D (1 + 2 n_freq))`` of ``x`` in about [-1, 1]."""
    f = (2.0 ** torch.arange(n_freq, device=x.device, dtype=x.dtype)) * math.pi
    xs = x[..., None] * f
    return torch.cat([x, xs.sin().flatten(-2), xs.cos().flatten(-2)], -1)


def flame_vertex_binding(faces: np.ndarray | Tensor, num_vertices: int) -> np.ndarray:
    """One face per vertex (the lowest-index face using it) ``(V,)`` int64, for the FLAME
    position baseline; ``-1`` for a vertex no face uses."""
    f = np.asarray(faces).reshape(-1)
    big = np.iinfo(np.int64).max
    out = np.full(num_vertices, big, np.int64)
    np.minimum.at(out, f, np.repeat(np.arange(len(f) // 3), 3))
    out[out == big] = -1
    return out


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class _Stream(nn.Module):
    """One modality's weights in an MM block (SD3 / LAM: separate weights per modality).

    ``out=False`` (the image stream of the last block, SD3's "context pre-only"): the tokens
    only serve as keys and values, so no query, output projection or MLP.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, out: bool = True) -> None:
        super().__init__()
        self.heads, self.out = heads, out
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, (3 if out else 2) * dim)
        self.q_norm = nn.RMSNorm(dim // heads) if out else None
        self.k_norm = nn.RMSNorm(dim // heads)
        if out:
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = _mlp(dim, int(dim * mlp_ratio), dim)

    def qkv_heads(self, x: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        B, L, D = x.shape
        n = 3 if self.out else 2
        parts = self.qkv(self.norm1(x)).reshape(B, L, n, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q = self.q_norm(parts[0]) if self.out else None
        return q, self.k_norm(parts[-2]), parts[-1]


class MMBlock(nn.Module):
    """Joint attention over ``[point tokens ; image tokens]`` with per-modality weights.

    Args:
        context_out: update the image tokens too (False for the last block, whose image
            token outputs nobody reads).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, context_out: bool = True) -> None:
        super().__init__()
        self.x = _Stream(dim, heads, mlp_ratio)
        self.c = _Stream(dim, heads, mlp_ratio, out=context_out)

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """``x (G, Lx, D)`` point tokens (one row per attention group), ``c (G, Lc, D)``."""
        qx, kx, vx = self.x.qkv_heads(x)
        qc, kc, vc = self.c.qkv_heads(c)
        q = torch.cat([qx, qc], 2) if qc is not None else qx
        o = F.scaled_dot_product_attention(q, torch.cat([kx, kc], 2), torch.cat([vx, vc], 2))
        G, H, L, Dh = o.shape
        o = o.transpose(1, 2).reshape(G, L, H * Dh)
        Lx = x.shape[1]
        x = x + self.x.proj(o[:, :Lx])
        x = x + self.x.mlp(self.x.norm2(x))
        if qc is not None:
            c = c + self.c.proj(o[:, Lx:])
            c = c + self.c.mlp(self.c.norm2(c))
        return x, c


class GaussianDecoder(nn.Module):
    """Points, AR hidden states and image tokens -> canonical Gaussians.

    Args:
        config: :class:`DecoderConfig`.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        half = c.dim // 2 if c.inputs == "both" else c.dim
        self.pos_mlp = _mlp(3 * (1 + 2 * c.pe_freqs), half, half) if c.inputs != "feature" else None
        self.feat_mlp = _mlp(4 * c.ar_dim, half, half) if c.inputs != "position" else None
        width = (half if self.pos_mlp is not None else 0) + (half if self.feat_mlp is not None else 0)
        self.in_proj = nn.Linear(width, c.dim)
        self.cond_proj = nn.Sequential(nn.LayerNorm(c.cond_dim), nn.Linear(c.cond_dim, c.dim))
        self.blocks = nn.ModuleList([MMBlock(c.dim, c.heads, c.mlp_ratio, context_out=i < c.depth - 1)
                                     for i in range(c.depth)])
        self.out_norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, 14)  # rgb 3, opacity 1, scale 3, rotation 4, offset 3
        nn.init.normal_(self.head.weight, std=1e-3)
        with torch.no_grad():
            b = torch.zeros(14)
            b[3] = math.log(c.init_opacity / (1 - c.init_opacity))
            r = c.init_scale / c.max_scale
            b[4:7] = math.log(r / (1 - r))
            b[7] = 1.0  # identity rotation
            self.head.bias.copy_(b)
        self.register_buffer("box_lo", torch.tensor(c.box_lo), persistent=False)
        self.register_buffer("box_hi", torch.tensor(c.box_hi), persistent=False)

    @property
    def needs_features(self) -> bool:
        """True when the AR hidden states are an input (``inputs`` is ``both`` or ``feature``)."""
        return self.feat_mlp is not None

    def _groups(self, n: int) -> list[tuple[int, int]]:
        g = self.config.attention_group
        k = 1 if g is None or n <= g else -(-n // g)
        bounds = np.linspace(0, n, k + 1).round().astype(int)
        return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))

    def forward(self, points: Tensor, hidden: Tensor | None, cond: Tensor) -> DecodedGaussians:
        """Decode.

        Args:
            points: ``(B, N, 3)`` de-quantised canonical coordinates (metres, FLAME space).
            hidden: ``(B, N, 4, ar_dim)`` final hidden states of each point's 4 tokens
                (any float dtype), or ``None`` when ``inputs == "position"``.
            cond: ``(B, M, cond_dim)`` image tokens (the AR model's conditioning context).

        Returns:
            :class:`DecodedGaussians` with ``(B, N, ...)`` tensors.

        Raises:
            ValueError: hidden states missing when the configuration needs them.
        """
        c = self.config
        B, N, _ = points.shape
        parts = []
        if self.pos_mlp is not None:
            u = (points - self.box_lo) / (self.box_hi - self.box_lo) * 2 - 1
            parts.append(self.pos_mlp(nerf_encoding(u, c.pe_freqs)))
        if self.feat_mlp is not None:
            if hidden is None:
                raise ValueError("GaussianDecoder: inputs include the AR features but no hidden states were given")
            parts.append(self.feat_mlp(hidden.reshape(B, N, -1).to(points.dtype)))
        x = self.in_proj(torch.cat(parts, -1))
        ctx = self.cond_proj(cond.to(x.dtype))
        groups = self._groups(N)
        sizes = sorted({e - s for s, e in groups})
        for blk in self.blocks:
            outs, cs = [None] * len(groups), []
            for size in sizes:  # groups differ in length by at most one: one batched call per length
                idx = [j for j, (s, e) in enumerate(groups) if e - s == size]
                xs = torch.cat([x[:, s:e] for s, e in (groups[j] for j in idx)], 0)
                yx, yc = blk(xs, ctx.repeat(len(idx), 1, 1))
                for n_, j in enumerate(idx):
                    outs[j] = yx[n_ * B:(n_ + 1) * B]
                cs.append(yc.reshape(len(idx), B, *yc.shape[1:]).sum(0))
            x = torch.cat(outs, 1)
            ctx = torch.stack(cs).sum(0) / len(groups)  # image tokens: the mean over the groups
        y = self.head(self.out_norm(x))
        rgb = torch.sigmoid(y[..., 0:3])
        opacity = torch.sigmoid(y[..., 3])
        scales = c.max_scale * torch.sigmoid(y[..., 4:7])
        q = y[..., 7:11]
        quats = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        offsets = c.max_offset * torch.tanh(y[..., 11:14])
        return DecodedGaussians(points + offsets, offsets, rgb, opacity, scales, quats)
