"""The autoregressive point-cloud transformer (paper section 4.1, supplementary D).

A decoder-only transformer from ``x-transformers`` (RoPE, RMSNorm) in which every layer
cross-attends to the conditioning context, trained by next-token prediction on the
tokens of :mod:`pointillist_data.tokens`. Presets: ``paper`` (dim 1024, depth 24, 16 heads)
and ``tiny`` (for CPU tests and the demo).
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
        if self.image_encoder not in ("patch", "dinov2"):
            raise ValueError("image_encoder must be 'patch' or 'dinov2'")

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.num_bins, self.num_faces)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "paper": ARConfig(),
    "tiny": ARConfig(dim=64, depth=2, heads=4, max_seq_len=1024, image_encoder="patch", image_size=64,
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
            attn_layers=Decoder(dim=config.dim, depth=config.depth, heads=config.heads, rotary_pos_emb=True,
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
