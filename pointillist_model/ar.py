"""The autoregressive point-cloud transformer (paper section 4.1, supplementary D).

A decoder-only transformer from ``x-transformers`` (RoPE, RMSNorm) in which every layer
cross-attends to the conditioning context, trained by next-token prediction on the
tokens of :mod:`pointillist_data.tokens`. Presets: ``paper`` (dim 1024, depth 24, 16 heads of
64) and ``tiny`` (dim 64, depth 2, 2 heads of 32; for CPU tests and the demo). Rotary
embeddings turn half of each head, at least 32 dimensions (x-transformers' default and its
advice), so the whole head of the tiny preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from x_transformers import Decoder, TransformerWrapper

from pointillist_data.tokens import Vocabulary

from .condition import Conditioner, Dinov2ImageEncoder, PatchImageEncoder

__all__ = ["ARConfig", "PRESETS", "PointillistAR", "next_token_loss"]


@dataclass
class ARConfig:
    """Model settings (saved in every checkpoint).

    Attributes:
        dim, depth, heads: transformer width, layers and attention heads.
        dim_head: width of one attention head; ``None``: ``dim // heads`` (the paper preset's
            1024 / 16 = 64). Checkpoints written before this field existed used x-transformers'
            default of 64 at every width (:meth:`from_dict` restores that).
        max_seq_len: training window (tokens); generation slides past it (rotary positions).
        num_bins, num_faces: vocabulary (see :class:`Vocabulary`).
        image_encoder: ``patch`` (trainable, small) or ``dinov2`` (frozen, local weights).
        dinov2_weights: local DINOv2 folder (``image_encoder='dinov2'``).
        image_size: conditioning image resolution fed to the encoder.
        num_latents: point-encoder latents over the FLAME vertices.
        flame_points: FLAME vertices sampled for the point encoder.
        flash: use flash / SDPA attention.
    """

    dim: int = 1024
    depth: int = 24
    heads: int = 16
    dim_head: int | None = None
    max_seq_len: int = 12000
    num_bins: int = 1024
    num_faces: int = 10144
    image_encoder: str = "dinov2"
    dinov2_weights: str | None = None
    image_size: int = 224
    num_latents: int = 256
    flame_points: int = 2048
    flash: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.dim_head is not None and self.dim_head < 1:
            raise ValueError(f"dim_head must be >= 1, got {self.dim_head}")
        if self.image_encoder not in ("patch", "dinov2"):
            raise ValueError("image_encoder must be 'patch' or 'dinov2'")

    @property
    def head_dim(self) -> int:
        """The width of one attention head (``dim_head`` or ``dim // heads``)."""
        return self.dim_head or self.dim // self.heads

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.num_bins, self.num_faces)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ARConfig:
        """The config saved in a checkpoint (one without ``dim_head`` used x-transformers' 64)."""
        return cls(**{"dim_head": 64, **d})


PRESETS = {
    "paper": ARConfig(),
    # the paper's proportions scaled down: dim_head = dim / heads (its KV cache is 4x smaller than
    # with x-transformers' default dim_head of 64, which made batched CPU generation memory-bound)
    "tiny": ARConfig(dim=64, depth=2, heads=2, max_seq_len=1024, image_encoder="patch", image_size=64,
                     num_latents=16, flame_points=256, flash=False),
}


class PointillistAR(nn.Module):
    """Conditioner + x-transformers decoder.

    Args:
        config: :class:`ARConfig`.
        dinov2_config: a ``transformers.Dinov2Config`` for a random DINOv2 (tests) when the
            preset asks for DINOv2 without weights.
    """

    def __init__(self, config: ARConfig, dinov2_config=None) -> None:
        super().__init__()
        self.config = config
        if config.image_encoder == "patch":
            img = PatchImageEncoder(config.dim, config.image_size)
        else:
            img = Dinov2ImageEncoder(config.dinov2_weights, dinov2_config, config.image_size)
        self.conditioner = Conditioner(img, config.dim, config.num_latents)
        self.net = TransformerWrapper(
            num_tokens=config.vocab.size, max_seq_len=config.max_seq_len,
            attn_layers=Decoder(dim=config.dim, depth=config.depth, heads=config.heads,
                                attn_dim_head=config.head_dim, rotary_pos_emb=True,
                                rotary_emb_dim=min(config.head_dim, max(32, config.head_dim // 2)),
                                use_rmsnorm=True, cross_attend=True, attn_flash=config.flash),
        )
        self.register_buffer("flame_idx", torch.zeros(0, dtype=torch.long), persistent=False)

    def flame_subset(self, vertices: Tensor) -> Tensor:
        """A fixed, evenly spread subset of ``flame_points`` vertices of ``(B, V, 3)``."""
        V = vertices.shape[1]
        if self.flame_idx.numel() != min(V, self.config.flame_points):
            idx = np.linspace(0, V - 1, min(V, self.config.flame_points)).round().astype(np.int64)
            self.flame_idx = torch.as_tensor(idx, device=vertices.device)
        return vertices[:, self.flame_idx]

    def context(self, images: Tensor, flame_vertices: Tensor) -> Tensor:
        """Cross-attention context ``(B, N, dim)`` from images and FLAME vertices ``(B, V, 3)``."""
        return self.conditioner(images, self.flame_subset(flame_vertices))

    def forward(self, tokens: Tensor, context: Tensor, return_hidden: bool = False):
        """Logits ``(B, L, vocab)`` (and final hidden states ``(B, L, dim)``) for ``tokens (B, L)``."""
        if return_hidden:
            return self.net(tokens, context=context, return_logits_and_embeddings=True)
        return self.net(tokens, context=context)


def next_token_loss(logits: Tensor, tokens: Tensor, loss_mask: Tensor) -> Tensor:
    """Cross entropy of predicting ``tokens[:, 1:]`` where ``loss_mask[:, 1:]`` holds."""
    tgt = tokens[:, 1:]
    m = loss_mask[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), reduction="none")
    return (ce * m.reshape(-1)).sum() / m.sum().clamp_min(1)
