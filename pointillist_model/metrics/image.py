"""Full-reference image metrics: PSNR, SSIM and LPIPS, per image.

Images are ``(B, 3, H, W)`` float tensors in ``[0, 1]`` or ``(B, H, W, 3)`` uint8 arrays
(:func:`to_nchw` converts). SSIM is pytorch-msssim's (Wang et al. 2004: 11x11 Gaussian
window, sigma 1.5, K1 0.01, K2 0.03, valid filtering, channel mean), the same estimator the
decoder is trained with; LPIPS is :class:`pointillist_model.lpips.LPIPS` (VGG16 "lin", local
weights, Zhang et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ssim as _ssim
from torch import Tensor

from . import MetricInputError

__all__ = ["to_nchw", "psnr", "ssim", "lpips"]


def to_nchw(images, device: str | torch.device = "cpu") -> Tensor:
    """``(B, H, W, 3)`` uint8 / float array or ``(B, 3, H, W)`` float tensor -> ``(B, 3, H, W)``
    float32 in ``[0, 1]`` (uint8 is divided by 255)."""
    if isinstance(images, np.ndarray):
        a = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a))
        if t.ndim == 3:
            t = t[None]
        t = t.permute(0, 3, 1, 2)
    else:
        t = images.float()
        if t.ndim == 3:
            t = t[None]
    if t.ndim != 4 or t.shape[1] != 3:
        raise MetricInputError(f"images: expected (B, H, W, 3) or (B, 3, H, W), got {tuple(t.shape)}")
    return t.to(device)


def _pair(a, b) -> tuple[Tensor, Tensor]:
    a, b = to_nchw(a), to_nchw(b)
    if a.shape != b.shape:
        raise MetricInputError(f"images: prediction {tuple(a.shape)} and reference {tuple(b.shape)} differ in shape")
    return a, b.to(a.device)


def psnr(pred, ref) -> Tensor:
    """PSNR ``(B,)`` in dB, ``10 log10(1 / MSE)`` per image for data range 1 (MSE floored at 1e-12)."""
    a, b = _pair(pred, ref)
    mse = (a.double() - b.double()).pow(2).mean((1, 2, 3)).clamp_min(1e-12)
    return (10 * torch.log10(1.0 / mse)).float()


def ssim(pred, ref, win_size: int = 11) -> Tensor:
    """SSIM ``(B,)`` per image (mean over the valid window positions and the channels).

    The window shrinks to the largest odd size that fits images smaller than 11 pixels.
    """
    a, b = _pair(pred, ref)
    win = min(win_size, (min(a.shape[2:]) // 2) * 2 - 1)
    if win < 3:
        raise MetricInputError(f"images: {tuple(a.shape[2:])} is too small for SSIM")
    return _ssim(a.double(), b.double(), data_range=1.0, size_average=False, win_size=win).float()


@torch.no_grad()
def lpips(net, pred, ref, batch: int = 8) -> Tensor:
    """LPIPS ``(B,)`` with a loaded :class:`~pointillist_model.lpips.LPIPS` (``load_lpips(path)``)."""
    a, b = _pair(pred, ref)
    dev = next(net.parameters()).device
    return torch.cat([net(a[i:i + batch].to(dev), b[i:i + batch].to(dev)).cpu() for i in range(0, len(a), batch)])
