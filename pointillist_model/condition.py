"""Conditioning of the AR model (paper section 4.1): image features and FLAME point features.

* :class:`Dinov2ImageEncoder` - DINOv2 through ``transformers``' ``Dinov2Model``, loaded from a
  local weights folder only (never downloaded); frozen. A tiny randomly initialised
  ``Dinov2Config`` stands in for tests.
* :class:`PatchImageEncoder` - a small trainable patch embedding for CPU demos and tests.
* :class:`PrecomputedImageFeatures` - features computed once and stored (``(S, N, D)`` npz),
  looked up by sample index.
* :class:`PointEncoder` - a perceiver in Michelangelo's spirit: learned latents cross-attend
  to Fourier-encoded FLAME vertices of the identity's tracked shape.
* :class:`Conditioner` - projects both to the model width and concatenates them, the
  context every decoder layer cross-attends to.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pointillist_data.errors import PointillistError

__all__ = ["Dinov2ImageEncoder", "PatchImageEncoder", "PrecomputedImageFeatures", "PointEncoder", "Conditioner",
           "fourier_features", "ConditioningError"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConditioningError(PointillistError, ValueError):
    """Missing or malformed conditioning weights or features."""


def _to_float_image(images: Tensor, size: int) -> Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, size, size)`` ImageNet-normalised floats."""
    x = images.float().permute(0, 3, 1, 2) / 255.0
    x = nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = x.new_tensor(IMAGENET_MEAN)[None, :, None, None]
    std = x.new_tensor(IMAGENET_STD)[None, :, None, None]
    return (x - mean) / std


class Dinov2ImageEncoder(nn.Module):
    """Frozen DINOv2 patch features ``(B, 1 + P, hidden)``.

    Args:
        weights: a local folder with a ``transformers`` DINOv2 checkpoint (``config.json`` and
            weights), or ``None`` with ``config`` for a randomly initialised model (tests).
        config: a ``transformers.Dinov2Config`` used when ``weights`` is ``None``.
        image_size: input resolution (multiple of the patch size).

    Raises:
        ConditioningError: no weights path and no config, or the path holds no checkpoint.
        ImportError: ``transformers`` is not installed (extra ``dino``).
    """

    def __init__(self, weights: str | Path | None = None, config=None, image_size: int = 224) -> None:
        super().__init__()
        try:
            from transformers import Dinov2Model
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("DINOv2 conditioning needs the optional extra: pip install 'pointillist[dino]'") from e
        if weights is not None:
            p = Path(weights)
            if not (p / "config.json").exists():
                raise ConditioningError(f"{p}: no DINOv2 checkpoint (config.json) there; download the weights "
                                        "once and pass the folder - nothing is fetched at run time")
            self.model = Dinov2Model.from_pretrained(str(p), local_files_only=True)
        elif config is not None:
            self.model = Dinov2Model(config)
        else:
            raise ConditioningError("DINOv2 needs a local weights folder (or a config for a random model)")
        self.model.requires_grad_(False).eval()
        self.image_size = image_size
        self.dim = self.model.config.hidden_size

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(pixel_values=_to_float_image(images, self.image_size)).last_hidden_state


class PatchImageEncoder(nn.Module):
    """A trainable patch embedding ``(B, P, dim)`` with learned positions (demo / tests)."""

    def __init__(self, dim: int = 64, image_size: int = 64, patch: int = 8) -> None:
        super().__init__()
        self.image_size, self.dim = image_size, dim
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, dim) * 0.02)

    def forward(self, images: Tensor) -> Tensor:
        x = self.proj(_to_float_image(images, self.image_size))
        return x.flatten(2).transpose(1, 2) + self.pos


class PrecomputedImageFeatures(nn.Module):
    """Image features stored once per sample: ``features (S, N, D)`` in an npz, by index.

    Raises:
        ConditioningError: the file is missing or lacks ``features``.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        p = Path(path)
        if not p.exists():
            raise ConditioningError(f"{p}: precomputed image features not found")
        with np.load(p) as z:
            if "features" not in z.files:
                raise ConditioningError(f"{p}: missing key 'features'")
            self.register_buffer("features", torch.as_tensor(z["features"], dtype=torch.float32))
        self.dim = int(self.features.shape[-1])

    def forward(self, sample_index: Tensor) -> Tensor:
        return self.features[sample_index]


def fourier_features(x: Tensor, n_freq: int = 8) -> Tensor:
    """NeRF positional encoding of ``x (..., 3)`` (metres, x100 so the head spans ~±20)."""
    f = 2.0 ** torch.arange(n_freq, device=x.device, dtype=x.dtype) * math.pi
    xs = (x * 10.0)[..., None] * f
    return torch.cat([x, xs.sin().flatten(-2), xs.cos().flatten(-2)], -1)


class PointEncoder(nn.Module):
    """Perceiver: ``num_latents`` learned queries cross-attend to encoded FLAME vertices.

    Args:
        dim: output width; num_latents: output tokens; heads: attention heads.
    """

    def __init__(self, dim: int, num_latents: int = 64, heads: int = 4, n_freq: int = 8) -> None:
        super().__init__()
        self.n_freq = n_freq
        self.embed = nn.Linear(3 + 6 * n_freq, dim)
        self.latents = nn.Parameter(torch.randn(1, num_latents, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, points: Tensor) -> Tensor:
        """``points (B, V, 3)`` metres -> ``(B, num_latents, dim)``."""
        kv = self.norm_kv(self.embed(fourier_features(points, self.n_freq)))
        q = self.norm_q(self.latents.expand(points.shape[0], -1, -1))
        x = self.latents + self.attn(q, kv, kv, need_weights=False)[0]
        return x + self.ff(x)


class Conditioner(nn.Module):
    """``[image features ; point features]`` projected to ``dim`` (the cross-attention context).

    Args:
        image_encoder: any module mapping images (or sample indices) to ``(B, N, D)``.
        dim: model width.
        num_latents: point-encoder latents.
    """

    def __init__(self, image_encoder: nn.Module, dim: int, num_latents: int = 64) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.image_proj = nn.Linear(image_encoder.dim, dim)
        self.points = PointEncoder(dim, num_latents)
        self.type_emb = nn.Parameter(torch.zeros(2, dim))

    def forward(self, images: Tensor, flame_points: Tensor) -> Tensor:
        """``images`` ``(B, H, W, 3)`` uint8 (or indices for precomputed features) and
        ``flame_points (B, V, 3)`` -> context ``(B, N + num_latents, dim)``."""
        a = self.image_proj(self.image_encoder(images)) + self.type_emb[0]
        b = self.points(flame_points) + self.type_emb[1]
        return torch.cat([a, b], 1)
