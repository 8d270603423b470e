"""Robust Video Matting (MobileNetV3) and BackgroundMattingV2 networks for user-supplied weights.

Re-implemented in plain torch (no torchvision) from the architectures of
PeterL1n/RobustVideoMatting (``model/model.py``: ``MattingNetwork('mobilenetv3')`` with the
deep guided filter refiner) and PeterL1n/BackgroundMattingV2 (``model/model.py``:
``MattingRefine``), with the same module names, so that the published state_dicts
(``rvm_mobilenetv3.pth``; ``pytorch_mobilenetv2.pth``, ``pytorch_resnet50.pth``,
``pytorch_resnet101.pth``) load by key name with ``strict=True``. The backbones follow
torchvision's ``MobileNetV3`` / ``MobileNetV2`` / ``ResNet`` layouts, which both projects
subclass. Nothing is downloaded: :func:`load_rvm` and :func:`load_bgmv2` take a local path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .matting_spec import MattingError

__all__ = ["RVMMobileNetV3", "BGMv2Refine", "load_rvm", "load_bgmv2", "load_state_dict_file"]

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalisation of RVM's encoder


def _cna(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1,
         act: type[nn.Module] | None = nn.ReLU, eps: float = 1e-5) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: keys ``0`` (conv, no bias), ``1`` (BN), ``2`` (act)."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 * dilation, dilation=dilation, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps)]
    return nn.Sequential(*layers, act(inplace=True)) if act is not None else nn.Sequential(*layers)


# ----------------------------------------------------------------------------- RVM (MobileNetV3)

def _divisible8(v: int) -> int:
    """torchvision's ``_make_divisible(v, 8)``: nearest multiple of 8, never 10 % below ``v``."""
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


class _SE(nn.Module):
    """torchvision ``SqueezeExcitation`` (``fc1``, ``fc2``; ReLU, Hardsigmoid)."""

    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(ch, squeeze, 1), nn.Conv2d(squeeze, ch, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class _V3Block(nn.Module):
    """torchvision MobileNetV3 ``InvertedResidual`` (``block``: expand?, depthwise, SE?, project)."""

    def __init__(self, cin, k, exp, cout, se, hs, stride, dilation) -> None:
        super().__init__()
        act, eps = (nn.Hardswish if hs else nn.ReLU), 1e-3
        stride = 1 if dilation > 1 else stride  # torchvision: dilation replaces the stride
        layers = [_cna(cin, exp, 1, act=act, eps=eps)] if exp != cin else []
        layers.append(_cna(exp, exp, k, stride, groups=exp, dilation=dilation, act=act, eps=eps))
        if se:
            layers.append(_SE(exp, _divisible8(exp // 4)))
        layers.append(_cna(exp, cout, 1, act=None, eps=eps))
        self.block = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.res else y


# RVM's MobileNetV3LargeEncoder: (in, kernel, expanded, out, SE, hardswish, stride, dilation)
_V3_LARGE = [(16, 3, 16, 16, 0, 0, 1, 1), (16, 3, 64, 24, 0, 0, 2, 1), (24, 3, 72, 24, 0, 0, 1, 1),
             (24, 5, 72, 40, 1, 0, 2, 1), (40, 5, 120, 40, 1, 0, 1, 1), (40, 5, 120, 40, 1, 0, 1, 1),
             (40, 3, 240, 80, 0, 1, 2, 1), (80, 3, 200, 80, 0, 1, 1, 1), (80, 3, 184, 80, 0, 1, 1, 1),
             (80, 3, 184, 80, 0, 1, 1, 1), (80, 3, 480, 112, 1, 1, 1, 1), (112, 3, 672, 112, 1, 1, 1, 1),
             (112, 5, 672, 160, 1, 1, 2, 2), (160, 5, 960, 160, 1, 1, 1, 2), (160, 5, 960, 160, 1, 1, 1, 2)]


class _V3Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_cna(3, 16, 3, 2, act=nn.Hardswish, eps=1e-3), *[_V3Block(*c) for c in _V3_LARGE],
                                      _cna(160, 960, 1, act=nn.Hardswish, eps=1e-3))

    def forward(self, x):
        x = (x - x.new_tensor(_MEAN)[:, None, None]) / x.new_tensor(_STD)[:, None, None]
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in (1, 3, 6, 16):  # strides 2, 4, 8 and 16 (the last blocks are dilated)
                out.append(x)
        return out


class _LRASPP(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.aspp1 = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))
        self.aspp2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.aspp1(x) * self.aspp2(x)


class _ConvGRU(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.ch = ch
        self.ih = nn.Sequential(nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), nn.Tanh())

    def forward(self, x, h):
        h = torch.zeros_like(x) if h is None else h
        r, z = self.ih(torch.cat([x, h], 1)).split(self.ch, 1)
        c = self.hh(torch.cat([x, r * h], 1))
        h = (1 - z) * h + z * c
        return h, h


class _Bottleneck(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.gru = _ConvGRU(ch // 2)

    def forward(self, x, r):
        a, b = x.chunk(2, 1)
        b, r = self.gru(b, r)
        return torch.cat([a, b], 1), r


class _Up(nn.Module):
    def __init__(self, cin: int, skip: int, src: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin + skip + src, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(True))
        self.gru = _ConvGRU(cout // 2)

    def forward(self, x, f, s, r):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[..., : s.shape[2], : s.shape[3]]
        a, b = self.conv(torch.cat([x, f, s], 1)).chunk(2, 1)
        b, r = self.gru(b, r)
        return torch.cat([a, b], 1), r


class _Out(nn.Module):
    def __init__(self, cin: int, src: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin + src, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))

    def forward(self, x, s):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[..., : s.shape[2], : s.shape[3]]
        return self.conv(torch.cat([x, s], 1))


class _Decoder(nn.Module):
    """RVM's ``RecurrentDecoder([16, 24, 40, 128], [80, 40, 32, 16])``."""

    def __init__(self, feat=(16, 24, 40, 128), dec=(80, 40, 32, 16)) -> None:
        super().__init__()
        self.decode4 = _Bottleneck(feat[3])
        self.decode3 = _Up(feat[3], feat[2], 3, dec[0])
        self.decode2 = _Up(dec[0], feat[1], 3, dec[1])
        self.decode1 = _Up(dec[1], feat[0], 3, dec[2])
        self.decode0 = _Out(dec[2], 3, dec[3])

    def forward(self, s0, f1, f2, f3, f4, rec):
        pool = lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)  # noqa: E731
        s1 = pool(s0)
        s2 = pool(s1)
        s3 = pool(s2)
        x4, r4 = self.decode4(f4, rec[3])
        x3, r3 = self.decode3(x4, f3, s3, rec[2])
        x2, r2 = self.decode2(x3, f2, s2, rec[1])
        x1, r1 = self.decode1(x2, f1, s1, rec[0])
        return self.decode0(x1, s0), [r1, r2, r3, r4]


class _Projection(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv(x)


class _DeepGuidedFilter(nn.Module):
    """RVM's ``DeepGuidedFilterRefiner`` (after Wu et al. 2018): upsamples the coarse
    foreground and alpha with a guided filter whose coefficients a small network predicts."""

    def __init__(self, hid: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, 3, padding=1, bias=False, groups=4)
        self.box_filter.weight.data[...] = 1 / 9
        self.conv = nn.Sequential(nn.Conv2d(8 + hid, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU(True),
                                  nn.Conv2d(hid, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU(True),
                                  nn.Conv2d(hid, 4, 1, bias=True))

    def forward(self, fine, base, fgr, pha, hid):
        fx = torch.cat([fine, fine.mean(1, keepdim=True)], 1)
        bx = torch.cat([base, base.mean(1, keepdim=True)], 1)
        by = torch.cat([fgr, pha], 1)
        mx, my = self.box_filter(bx), self.box_filter(by)
        cov, var = self.box_filter(bx * by) - mx * my, self.box_filter(bx * bx) - mx * mx
        A = self.conv(torch.cat([cov, var, hid], 1))
        b = my - A * mx
        size = fine.shape[2:]
        A = F.interpolate(A, size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size, mode="bilinear", align_corners=False)
        return (A * fx + b).split([3, 1], 1)


class RVMMobileNetV3(nn.Module):
    """Robust Video Matting, MobileNetV3-Large variant with the deep guided filter refiner
    (upstream ``MattingNetwork('mobilenetv3', 'deep_guided_filter')``; Lin et al. 2022,
    "Robust High-Resolution Video Matting with Temporal Guidance").

    State_dict keys: ``backbone.features.{0..16}...``, ``aspp.aspp{1,2}...``,
    ``decoder.decode{0..4}...``, ``project_mat.conv``, ``project_seg.conv``, ``refiner...``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _V3Encoder()
        self.aspp = _LRASPP(960, 128)
        self.decoder = _Decoder()
        self.project_mat = _Projection(16, 4)
        self.project_seg = _Projection(16, 1)
        self.refiner = _DeepGuidedFilter()

    def alpha(self, src: torch.Tensor, rec: list | None = None, downsample_ratio: float | None = None):
        """Alpha ``(B, 1, H, W)`` in [0, 1] of frames ``src (B, 3, H, W)`` float in [0, 1] and
        the new recurrent state (pass it with the next frame; ``None`` starts a clip).
        ``downsample_ratio`` (default: longest side to 512 px, never up, RVM's advice) sets the
        resolution of the encoder-decoder; the guided filter brings alpha back to full size."""
        ratio = downsample_ratio or min(1.0, 512 / max(src.shape[2:]))
        small = src if ratio == 1 else F.interpolate(src, scale_factor=ratio, mode="bilinear", align_corners=False,
                                                      recompute_scale_factor=False)
        f1, f2, f3, f4 = self.backbone(small)
        hid, rec = self.decoder(small, f1, f2, f3, self.aspp(f4), rec or [None] * 4)
        fgr_res, pha = self.project_mat(hid).split([3, 1], 1)
        if ratio != 1:
            fgr_res, pha = self.refiner(src, small, fgr_res, pha, hid)
        return pha.clamp(0, 1), rec


# ----------------------------------------------------------------------------- BackgroundMattingV2

class _V2Block(nn.Module):
    """torchvision MobileNetV2 ``InvertedResidual`` (``conv``: expand?, depthwise, project, BN)."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hid = cin * t
        layers = [_cna(cin, hid, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [_cna(hid, hid, 3, stride, groups=hid, act=nn.ReLU6), nn.Conv2d(hid, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class _V2Encoder(nn.Module):
    """BGMv2's ``MobileNetV2Encoder(6)``: 6 input channels, no last 1x1 block, ``features[14]``
    with stride 1 and ``features[15:]`` dilated by 2 (output stride 16)."""

    def __init__(self, cin: int = 6) -> None:
        super().__init__()
        blocks, c = [_cna(cin, 32, 3, 2, act=nn.ReLU6)], 32
        for t, cout, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                              (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                blocks.append(_V2Block(c, cout, s if i == 0 else 1, t))
                c = cout
        self.features = nn.Sequential(*blocks)
        self.features[14].conv[1][0].stride = (1, 1)
        for blk in self.features[15:]:
            blk.conv[1][0].dilation, blk.conv[1][0].padding = (2, 2), (2, 2)

    def forward(self, x):
        x0, feats = x, []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in (1, 3, 6):
                feats.append(x)
        return x, feats[2], feats[1], feats[0], x0


class _ResBlock(nn.Module):
    """torchvision ``Bottleneck`` (stride on the 3x3 conv)."""

    def __init__(self, cin: int, width: int, stride: int, dilation: int, down: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width)
        self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False),
                                        nn.BatchNorm2d(4 * width)) if down else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class _ResNetEncoder(nn.Module):
    """BGMv2's ``ResNetEncoder(6, variant)``: ``layer4`` dilated (output stride 16)."""

    def __init__(self, layers: tuple[int, int, int, int], cin: int = 6) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        c = 64
        for li, (n, width, stride) in enumerate(zip(layers, (64, 128, 256, 512), (1, 2, 2, 2), strict=True)):
            dil = 2 if li == 3 else 1
            s = 1 if li == 3 else stride
            blocks = [_ResBlock(c, width, s, 1, True)] + [_ResBlock(4 * width, width, 1, dil, False) for _ in range(n - 1)]
            setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
            c = 4 * width

    def forward(self, x):
        x0 = x
        x1 = F.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(F.max_pool2d(x1, 3, 2, 1))
        x3 = self.layer2(x2)
        return self.layer4(self.layer3(x3)), x3, x2, x1, x0


class _ASPP(nn.Module):
    """torchvision DeepLabV3 ``ASPP(cin, [3, 6, 9])``: keys ``convs.{0..4}``, ``project``."""

    def __init__(self, cin: int, rates=(3, 6, 9), cout: int = 256) -> None:
        super().__init__()
        convs = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())]
        convs += [nn.Sequential(nn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False), nn.BatchNorm2d(cout),
                                nn.ReLU()) for r in rates]
        convs.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU()))
        self.convs = nn.ModuleList(convs)
        self.project = nn.Sequential(nn.Conv2d(5 * cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                     nn.Dropout(0.5))

    def forward(self, x):
        outs = [c(x) for c in self.convs[:-1]]
        outs.append(F.interpolate(self.convs[-1](x), x.shape[2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class _BGDecoder(nn.Module):
    def __init__(self, ch, feat) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(feat[0] + ch[0], ch[1], 3, padding=1, bias=False), nn.BatchNorm2d(ch[1])
        self.conv2, self.bn2 = nn.Conv2d(feat[1] + ch[1], ch[2], 3, padding=1, bias=False), nn.BatchNorm2d(ch[2])
        self.conv3, self.bn3 = nn.Conv2d(feat[2] + ch[2], ch[3], 3, padding=1, bias=False), nn.BatchNorm2d(ch[3])
        self.conv4 = nn.Conv2d(feat[3] + ch[3], ch[4], 3, padding=1)

    def forward(self, x4, x3, x2, x1, x0):
        x = x4
        for skip, conv, bn in ((x3, self.conv1, self.bn1), (x2, self.conv2, self.bn2), (x1, self.conv3, self.bn3)):
            x = F.interpolate(x, skip.shape[2:], mode="bilinear", align_corners=False)
            x = F.relu(bn(conv(torch.cat([x, skip], 1))))
        x = F.interpolate(x, x0.shape[2:], mode="bilinear", align_corners=False)
        return self.conv4(torch.cat([x, x0], 1))


class _Refiner(nn.Module):
    """BGMv2's ``Refiner`` (kernel 3) run in its ``full`` mode (every 4 x 4 patch refined)."""

    def __init__(self) -> None:
        super().__init__()
        ch = (32, 24, 16, 12, 4)
        self.conv1, self.bn1 = nn.Conv2d(ch[0] + 6 + 4, ch[1], 3, bias=False), nn.BatchNorm2d(ch[1])
        self.conv2, self.bn2 = nn.Conv2d(ch[1], ch[2], 3, bias=False), nn.BatchNorm2d(ch[2])
        self.conv3, self.bn3 = nn.Conv2d(ch[2] + 6, ch[3], 3, bias=False), nn.BatchNorm2d(ch[3])
        self.conv4 = nn.Conv2d(ch[3], ch[4], 3, bias=True)

    def forward(self, src, bgr, pha, fgr, hid):
        H, W = src.shape[2:]
        sb = torch.cat([src, bgr], 1)
        x = F.interpolate(torch.cat([hid, pha, fgr], 1), (H // 2, W // 2), mode="bilinear", align_corners=False)
        y = F.interpolate(sb, (H // 2, W // 2), mode="bilinear", align_corners=False)
        x = F.relu(self.bn1(self.conv1(torch.cat([F.pad(x, (3,) * 4), F.pad(y, (3,) * 4)], 1))))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.interpolate(x, (H + 4, W + 4), mode="bilinear", align_corners=False)
        x = F.relu(self.bn3(self.conv3(torch.cat([x, F.pad(sb, (2,) * 4)], 1))))
        return self.conv4(x)[:, :1]


class BGMv2Refine(nn.Module):
    """BackgroundMattingV2 ``MattingRefine`` (Lin et al. 2021, "Real-Time High-Resolution
    Background Matting"): a base network on the frame and plate at ``backbone_scale`` and a
    refiner at full resolution (here always the ``full`` refine mode).

    Args:
        backbone: ``mobilenetv2``, ``resnet50`` or ``resnet101``.
        backbone_scale: the base network's image scale (<= 1/2; upstream default 1/4).
    """

    def __init__(self, backbone: str = "mobilenetv2", backbone_scale: float = 0.25) -> None:
        super().__init__()
        if backbone == "mobilenetv2":
            self.backbone, cin, feat = _V2Encoder(6), 320, (32, 24, 16, 6)
        else:
            self.backbone = _ResNetEncoder({"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}[backbone])
            cin, feat = 2048, (512, 256, 64, 6)
        self.aspp = _ASPP(cin)
        self.decoder = _BGDecoder((256, 128, 64, 48, 1 + 3 + 1 + 32), feat)
        self.refiner = _Refiner()
        self.backbone_scale = backbone_scale

    def alpha(self, src: torch.Tensor, bgr: torch.Tensor) -> torch.Tensor:
        """Alpha ``(B, 1, H, W)`` in [0, 1] of ``src`` and its plate ``bgr`` (``(B, 3, H, W)``
        float in [0, 1]); frames are padded (replicated edges) to a multiple of 16 / scale."""
        H, W = src.shape[2:]
        m = int(round(16 / self.backbone_scale))
        ph, pw = -H % m, -W % m
        src, bgr = (F.pad(t, (0, pw, 0, ph), mode="replicate") for t in (src, bgr))
        hs, ws = int(src.shape[2] * self.backbone_scale), int(src.shape[3] * self.backbone_scale)
        small = [F.interpolate(t, (hs, ws), mode="bilinear", align_corners=False) for t in (src, bgr)]
        x4, *skips = self.backbone(torch.cat(small, 1))
        x = self.decoder(self.aspp(x4), *skips)
        pha = self.refiner(src, bgr, x[:, 0:1].clamp(0, 1), x[:, 1:4], x[:, 5:].relu())
        return pha.clamp(0, 1)[:, :, :H, :W]


# ----------------------------------------------------------------------------- loading

def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a local ``.pth`` (a state_dict, or one under ``state_dict`` /
    ``model_state_dict``), loaded with ``weights_only=True`` (no pickled code runs).

    Raises:
        MattingError: the file is missing or holds no state_dict (the message names it).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MattingError(f"{p}: {what} weights not found (give the local path of the downloaded .pth file)")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise MattingError(f"{p}: not a PyTorch weights file ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise MattingError(f"{p}: holds no state_dict of tensors ({what} weights expected)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_into(net: nn.Module, sd: dict, path: str | Path, what: str, device: str) -> nn.Module:
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or extra or shapes:
        parts = [f"{len(x)} {n}, e.g. {x[0]}" for n, x in
                 (("missing keys", missing), ("unexpected keys", extra), ("shapes differ", shapes)) if x]
        raise MattingError(f"{path}: not {what} weights ({'; '.join(parts)})")
    net.load_state_dict(sd, strict=True)
    return net.eval().to(device)


def load_rvm(path: str | Path | None, device: str = "cpu") -> RVMMobileNetV3:
    """:class:`RVMMobileNetV3` with the weights of a local ``rvm_mobilenetv3.pth``.

    Raises:
        MattingError: no path, a missing or unreadable file, or a state_dict of another
            network (ResNet-50 RVM included: only the MobileNetV3 variant is implemented).
    """
    if path is None:
        raise MattingError("matting: rvm needs user-supplied weights (rvm_mobilenetv3.pth from "
                           "PeterL1n/RobustVideoMatting's releases): write 'rvm:<path>'")
    sd = load_state_dict_file(path, "Robust Video Matting")
    if any(k.startswith("backbone.layer") for k in sd):
        raise MattingError(f"{path}: RVM ResNet-50 weights; only the MobileNetV3 variant is supported")
    return _load_into(RVMMobileNetV3(), sd, path, "RVM MobileNetV3", device)


def load_bgmv2(path: str | Path | None, device: str = "cpu") -> BGMv2Refine:
    """:class:`BGMv2Refine` with the weights of a local BackgroundMattingV2 ``.pth``; the
    backbone (MobileNetV2, ResNet-50, ResNet-101) is read from the keys.

    Raises:
        MattingError: no path, a missing or unreadable file, or a state_dict of another network.
    """
    if path is None:
        raise MattingError("matting: bgmv2 needs user-supplied weights (a MattingRefine .pth from "
                           "PeterL1n/BackgroundMattingV2): write 'bgmv2:<path>'")
    sd = load_state_dict_file(path, "BackgroundMattingV2")
    if any(k.startswith("backbone.layer") for k in sd):
        blocks = {int(k.split(".")[2]) for k in sd if k.startswith("backbone.layer3.")}
        backbone = "resnet101" if len(blocks) > 6 else "resnet50"
    else:
        backbone = "mobilenetv2"
    return _load_into(BGMv2Refine(backbone), sd, path, f"BackgroundMattingV2 {backbone}", device)
