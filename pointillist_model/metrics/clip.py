"""CLIP identity score (the paper's "CLIP" / "Cross-CLIP" column, after CLIPScore): the cosine
similarity of the CLIP image embeddings (Radford et al. 2021) of the source portrait and of
each reenacted frame, in ``[-1, 1]`` (higher: the identity is better preserved).

The image encoder is read with Hugging Face transformers from a local folder
(``save_pretrained`` layout: ``config.json`` + weights; ``local_files_only``, nothing is
downloaded): a full CLIP model (``model_type`` ``clip``, e.g. a copy of
``openai/clip-vit-base-patch32``; its image tower and projection are used) or a
``CLIPVisionModelWithProjection``. Preprocessing as
CLIP's: shorter side resized to the encoder's ``image_size`` (bicubic), centre crop, CLIP's
mean / std (or those of ``preprocessor_config.json`` when the folder has one).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import MetricWeightsError

__all__ = ["ClipImageEncoder", "load_clip", "clip_identity_score", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImageEncoder(nn.Module):
    """Unit-norm CLIP image embeddings ``(B, D)`` float32 of images ``(B, 3, H, W)`` in ``[0, 1]``.

    Args:
        model: a transformers ``CLIPModel`` or ``CLIPVisionModelWithProjection``.
        mean, std: normalisation of the crops.
    """

    def __init__(self, model: nn.Module, mean=CLIP_MEAN, std=CLIP_STD) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        vc = getattr(model.config, "vision_config", model.config)
        self.size = int(vc.image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None])

    def preprocess(self, x: Tensor) -> Tensor:
        H, W = x.shape[2:]
        s = self.size / min(H, W)
        h, w = max(self.size, round(H * s)), max(self.size, round(W * s))
        x = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        t, le = (h - self.size) // 2, (w - self.size) // 2
        return (x[:, :, t:t + self.size, le:le + self.size] - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = self.preprocess(images)
        if hasattr(self.model, "get_image_features"):  # a full CLIP model
            e = self.model.get_image_features(pixel_values=x)
            e = getattr(e, "pooler_output", e)  # transformers 5 returns an output object
        else:
            e = self.model(pixel_values=x).image_embeds
        return F.normalize(e.float(), dim=-1)


def load_clip(path: str | Path | None, device: str | torch.device = "cpu") -> ClipImageEncoder:
    """The CLIP image encoder from a local transformers folder.

    Raises:
        MetricWeightsError: no path, no such folder, transformers missing (``dino`` extra), or
        a folder that does not hold a CLIP vision model.
    """
    if not path:
        raise MetricWeightsError("--clip-weights: the CLIP identity score needs a local CLIP image encoder folder "
                                 "(transformers save_pretrained layout); nothing is downloaded")
    p = Path(path)
    if not (p / "config.json").is_file():
        raise MetricWeightsError(f"{p}: no CLIP model folder (config.json missing; nothing is downloaded)")
    try:
        from transformers import CLIPModel, CLIPVisionModelWithProjection
    except ImportError:
        raise MetricWeightsError(f"{p}: the CLIP score needs transformers: pip install 'pointillist[dino]'") from None
    full = json.loads((p / "config.json").read_text()).get("model_type") == "clip"
    try:
        model = (CLIPModel if full else CLIPVisionModelWithProjection).from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        raise MetricWeightsError(f"{p}: not a CLIP vision model ({str(e).splitlines()[0][:160]})") from None
    mean, std = CLIP_MEAN, CLIP_STD
    pre = p / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    return ClipImageEncoder(model, mean, std).to(device)


def clip_identity_score(encoder: ClipImageEncoder, source, frames, batch: int = 16) -> Tensor:
    """Cosine similarity ``(B,)`` of the source portrait's embedding and each frame's.

    Args:
        source: one image (``(H, W, 3)`` uint8 or ``(1, 3, H, W)`` in [0, 1]).
        frames: ``B`` images (anything :func:`.image.to_nchw` takes).
    """
    from .image import to_nchw

    dev = encoder.mean.device
    s = encoder(to_nchw(source).to(dev))[0]
    x = to_nchw(frames)
    e = torch.cat([encoder(x[i:i + batch].to(dev)) for i in range(0, len(x), batch)])
    return (e @ s).cpu()
