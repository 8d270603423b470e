"""The tracker's (frame, camera) views at the render scale, kept as uint8 in a bounded cache.

The global pass samples random frames and cameras each iteration; reading and resampling a
view costs a zarr read and an area filter, so recent views are kept. They are kept as
uint8 (a quarter of float32's memory: 48 views of 512 x 512 are 50 MB, not 200 MB) and
converted to float32 when asked for; the silhouette weights are derived from the mask then.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ViewCache", "VIEW_CACHE"]

VIEW_CACHE = 48  # (frame, camera) views kept at the render scale


class ViewCache:
    """Views of the (possibly lazy) ``images (T, C, H0, W0, 3)`` / ``masks (T, C, H0, W0)``
    (uint8, or masks bool / float in [0, 1]; either may be ``None``) at ``W x H``.

    Args:
        band: pixels on each side of a mask's edge that the silhouette term ignores
            (``TrackingConfig.silhouette_band``).
        device: torch device of the returned tensors.
        capacity: views kept (least recently used dropped first).
    """

    def __init__(self, images: Any, masks: Any, size: tuple[int, int], full_size: tuple[int, int], band: int,
                 device: torch.device, capacity: int = VIEW_CACHE) -> None:
        self.images, self.masks = images, masks
        self.W, self.H = size
        self.W0, self.H0 = full_size
        self.band, self.dev, self.capacity = band, device, capacity
        self._kept: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def _resized_u8(self, x: torch.Tensor) -> torch.Tensor:
        """``(h, w, k)`` float in [0, 255] -> ``(H, W, k)`` uint8 at the render size (area filter)."""
        if (self.W, self.H) != (self.W0, self.H0):
            x = F.interpolate(x.permute(2, 0, 1)[None], (self.H, self.W), mode="area")[0].permute(1, 2, 0)
        return (x + 0.5).clamp(0, 255).to(torch.uint8)

    def _load(self, t: int, c: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.images is not None:
            im = torch.as_tensor(np.asarray(self.images[t, c]), device=self.dev).float()
            out["rgb"] = self._resized_u8(im)
        if self.masks is not None:
            raw = np.asarray(self.masks[t, c])
            mk = torch.as_tensor(raw, device=self.dev).float() * (1.0 if raw.dtype == np.uint8 else 255.0)
            out["mask"] = self._resized_u8(mk[..., None])[..., 0]
        return out

    def __call__(self, t: int, c: int) -> dict[str, torch.Tensor]:
        """Frame ``t`` in camera ``c``: ``rgb (H, W, 3)`` and ``mask (H, W)`` float32 in [0, 1]
        on the device, and the silhouette weights ``care`` (1 away from the mask's edge) and
        ``inner`` (the mask eroded by the band), each present when its source is."""
        key = (t, c)
        if key in self._kept:
            self._kept.move_to_end(key)
        else:
            self._kept[key] = self._load(t, c)
            if len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        raw = self._kept[key]
        out = {k: v.float() / 255.0 for k, v in raw.items()}
        if "mask" in out:
            # A mask's edge depends on its source (matting, background subtraction thresholds)
            # and the mesh has no hair: ignore a band of `band` pixels around the edge so that
            # the term only corrects gross misfits, never a systematic one-pixel bias.
            r = self.band
            flat = (out["mask"] > 0.5).float()[None, None]
            dil = F.max_pool2d(flat, 2 * r + 1, 1, r)
            ero = -F.max_pool2d(-flat, 2 * r + 1, 1, r)
            out["care"] = (1.0 - (dil - ero))[0, 0]
            out["inner"] = ero[0, 0]
        return out
