"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture") as FID's
feature extractor: the 2048-d global-average-pooled activations before the classifier.

The module names follow the published PyTorch weight files, so either loads unchanged from a
local path (nothing is downloaded):

* pytorch-fid's ``pt_inception-2015-12-05-*.pth`` (the TensorFlow FID network ported; 1008
  classes): the standard for published FID numbers. Its pooling differs from torchvision's in
  three places (average pools exclude padding; the last block max-pools), which is switched on
  automatically for a 1008-class file (``fid_variant``);
* torchvision's ``inception_v3_google-*.pth`` (1000 classes).

Inputs ``(B, 3, H, W)`` in ``[0, 1]`` are resized to 299x299 (bilinear) and mapped to
``[-1, 1]``, as both projects feed them. The ``width`` multiplier builds small networks for
tests (``width=1`` is Inception v3).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import MetricWeightsError

__all__ = ["InceptionV3", "load_inception"]


class _Conv(nn.Sequential):
    """Convolution (no bias), batch norm (eps 1e-3), ReLU; keys ``conv.*`` and ``bn.*``."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)
        self.relu = nn.ReLU()


def _avg3(x: Tensor, fid: bool) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=not fid)


class _BlockA(nn.Module):  # 35x35 grid: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1
    def __init__(self, c: int, pool: int, w, fid: bool) -> None:
        super().__init__()
        self.fid = fid
        self.branch1x1 = _Conv(c, w(64), 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(c, w(48), 1), _Conv(w(48), w(64), 5, padding=2)
        self.branch3x3dbl_1 = _Conv(c, w(64), 1)
        self.branch3x3dbl_2 = _Conv(w(64), w(96), 3, padding=1)
        self.branch3x3dbl_3 = _Conv(w(96), w(96), 3, padding=1)
        self.branch_pool = _Conv(c, pool, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x, self.fid))], 1)


class _BlockB(nn.Module):  # 35 -> 17 grid reduction
    def __init__(self, c: int, w) -> None:
        super().__init__()
        self.branch3x3 = _Conv(c, w(384), 3, stride=2)
        self.branch3x3dbl_1 = _Conv(c, w(64), 1)
        self.branch3x3dbl_2 = _Conv(w(64), w(96), 3, padding=1)
        self.branch3x3dbl_3 = _Conv(w(96), w(96), 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):  # 17x17 grid with factorised 7x7 convolutions
    def __init__(self, c: int, c7: int, w, fid: bool) -> None:
        super().__init__()
        self.fid = fid
        self.branch1x1 = _Conv(c, w(192), 1)
        self.branch7x7_1 = _Conv(c, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, w(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(c, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, w(192), (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(c, w(192), 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x, self.fid))], 1)


class _BlockD(nn.Module):  # 17 -> 8 grid reduction
    def __init__(self, c: int, w) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(c, w(192), 1), _Conv(w(192), w(320), 3, stride=2)
        self.branch7x7x3_1 = _Conv(c, w(192), 1)
        self.branch7x7x3_2 = _Conv(w(192), w(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(w(192), w(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(w(192), w(192), 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b = x
        for i in range(1, 5):
            b = getattr(self, f"branch7x7x3_{i}")(b)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):  # 8x8 grid with expanded filter banks
    def __init__(self, c: int, w, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = _Conv(c, w(320), 1)
        self.branch3x3_1 = _Conv(c, w(384), 1)
        self.branch3x3_2a = _Conv(w(384), w(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(w(384), w(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(c, w(448), 1)
        self.branch3x3dbl_2 = _Conv(w(448), w(384), 3, padding=1)
        self.branch3x3dbl_3a = _Conv(w(384), w(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(w(384), w(384), (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(c, w(192), 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            p = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            p = _avg3(x, self.pool == "avg_fid")
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a), self.branch3x3dbl_3a(d),
                          self.branch3x3dbl_3b(d), self.branch_pool(p)], 1)


class InceptionV3(nn.Module):
    """Inception v3 trunk; ``forward`` returns pool features ``(B, F)`` float32 (``F = 2048`` at width 1).

    Args:
        num_classes: classifier size of the weight file (1008 pytorch-fid, 1000 torchvision);
            the classifier is kept only so the files load strictly.
        fid_variant: pytorch-fid's pooling (see the module docstring).
        width: channel multiplier (tests use small random networks).
    """

    def __init__(self, num_classes: int = 1008, fid_variant: bool = True, width: float = 1.0) -> None:
        super().__init__()

        def w(c: int) -> int:
            return max(1, int(round(c * width)))

        self.Conv2d_1a_3x3 = _Conv(3, w(32), 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(w(32), w(32), 3)
        self.Conv2d_2b_3x3 = _Conv(w(32), w(64), 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(w(64), w(80), 1)
        self.Conv2d_4a_3x3 = _Conv(w(80), w(192), 3)
        self.Mixed_5b = _BlockA(w(192), w(32), w, fid_variant)
        ca = w(64) + w(64) + w(96)
        self.Mixed_5c = _BlockA(ca + w(32), w(64), w, fid_variant)
        self.Mixed_5d = _BlockA(ca + w(64), w(64), w, fid_variant)
        self.Mixed_6a = _BlockB(ca + w(64), w)
        cb = w(384) + w(96) + ca + w(64)
        self.Mixed_6b = _BlockC(cb, w(128), w, fid_variant)
        self.Mixed_6c = _BlockC(cb, w(160), w, fid_variant)
        self.Mixed_6d = _BlockC(cb, w(160), w, fid_variant)
        self.Mixed_6e = _BlockC(cb, w(192), w, fid_variant)
        self.Mixed_7a = _BlockD(cb, w)
        cd = w(320) + w(192) + cb
        self.Mixed_7b = _BlockE(cd, w, "avg_fid" if fid_variant else "avg")
        ce = w(320) + 4 * w(384) + w(192)
        self.Mixed_7c = _BlockE(ce, w, "max" if fid_variant else "avg")
        self.fc = nn.Linear(ce, num_classes)
        self.num_features = ce
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        """``images (B, 3, H, W)`` in ``[0, 1]`` -> pool features ``(B, num_features)``."""
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))


def load_inception(path: str | Path | None, device: str | torch.device = "cpu") -> InceptionV3:
    """Inception v3 from a local state-dict file (pytorch-fid's or torchvision's, see the module
    docstring); auxiliary-classifier weights in the file are ignored.

    Raises:
        MetricWeightsError: no path, no such file, or weights that do not fit Inception v3.
    """
    if not path:
        raise MetricWeightsError("--inception-weights: FID needs local Inception v3 weights (pytorch-fid's "
                                 "pt_inception-2015-12-05-*.pth or torchvision's inception_v3_google-*.pth); "
                                 "nothing is downloaded")
    p = Path(path)
    if not p.is_file():
        raise MetricWeightsError(f"{p}: Inception v3 weights not found (nothing is downloaded)")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MetricWeightsError(f"{p}: not a PyTorch state dict ({type(e).__name__})") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    n = int(sd["fc.weight"].shape[0]) if "fc.weight" in sd else -1
    if n not in (1000, 1008):
        raise MetricWeightsError(f"{p}: no Inception v3 classifier (fc.weight) with 1000 or 1008 classes")
    net = InceptionV3(num_classes=n, fid_variant=n == 1008)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise MetricWeightsError(f"{p}: weights do not fit Inception v3 ({str(e).splitlines()[0]})") from None
    return net.requires_grad_(False).to(device).eval()
