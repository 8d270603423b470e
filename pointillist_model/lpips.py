"""LPIPS perceptual distance (Zhang et al. 2018, "lin" variant on VGG16) from local weights.

The network is VGG16's convolutional trunk tapped after ``relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3``; each tap is unit-normalised over channels, the squared difference is
weighted per channel by a learned non-negative 1x1 convolution, averaged over space and
summed over taps. Inputs in ``[0, 1]`` are mapped to ``[-1, 1]`` and shifted / scaled as
the reference implementation does. Nothing is downloaded: weights come from a local path,

* a file holding this module's ``state_dict`` (``features.N.*`` and ``lin.K.weight``), or
* a folder holding torchvision's ``vgg16-*.pth`` and the ``lpips`` package's ``vgg.pth``
  (keys ``linK.model.1.weight``), the files those projects publish.

A small randomly initialised network (``widths=(4, 8, 8, 8, 8)``) serves tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from pointillist_data.errors import PointillistError

__all__ = ["LPIPS", "LpipsWeightsError", "load_lpips", "VGG16_WIDTHS"]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LpipsWeightsError(PointillistError, ValueError):
    """LPIPS weights are missing or do not fit the network."""


class LPIPS(nn.Module):
    """LPIPS distance ``(B,)`` between images ``(B, 3, H, W)`` in ``[0, 1]``.

    Args:
        widths: channels of the five VGG stages (VGG16's by default).

    The network is frozen (``requires_grad`` False); gradients flow to the inputs.
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        c_in = 3
        for s, (w, n) in enumerate(zip(widths, _CONVS_PER_STAGE, strict=True)):
            if s:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = w
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.lin = nn.ModuleList([nn.Conv2d(w, 1, 1, bias=False) for w in widths])
        for m in self.lin:
            nn.init.uniform_(m.weight, 0.0, 1.0 / m.weight.shape[1])
        self.register_buffer("shift", torch.tensor(_SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(_SCALE)[None, :, None, None])
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS ``(B,)`` of ``a`` and ``b`` ``(B, 3, H, W)`` in ``[0, 1]``."""
        fa = self._taps(((a * 2 - 1) - self.shift) / self.scale)
        fb = self._taps(((b * 2 - 1) - self.shift) / self.scale)
        return sum(lin((x - y).pow(2)).mean((2, 3))[:, 0] for lin, x, y in zip(self.lin, fa, fb, strict=True))


def load_lpips(path: str | Path, device: str | torch.device = "cpu") -> LPIPS:
    """VGG16 LPIPS from local weights (see the module docstring for the accepted layouts).

    Raises:
        LpipsWeightsError: the path does not exist, lacks a file, or a file does not fit.
    """
    p = Path(path)
    if not p.exists():
        raise LpipsWeightsError(f"{p}: LPIPS weights not found (nothing is downloaded; give a local file or folder)")
    net = LPIPS()
    if p.is_file():
        sd = torch.load(p, map_location="cpu", weights_only=True)
    else:
        vgg = sorted(p.glob("vgg16*.pth"))
        lin = p / "vgg.pth"
        if not vgg or not lin.exists():
            raise LpipsWeightsError(f"{p}: needs torchvision's vgg16-*.pth and the lpips package's vgg.pth")
        v = torch.load(vgg[0], map_location="cpu", weights_only=True)
        sd = {k: t for k, t in v.items() if k.startswith("features.")}
        for k, t in torch.load(lin, map_location="cpu", weights_only=True).items():
            if k.startswith("lin") and k.endswith(".model.1.weight"):
                sd[f"lin.{k[3:k.index('.')]}.weight"] = t
    sd = {**{k: v for k, v in net.state_dict().items() if k in ("shift", "scale")}, **sd}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise LpipsWeightsError(f"{p}: weights do not fit VGG16 LPIPS ({str(e).splitlines()[0]})") from None
    return net.to(device)
