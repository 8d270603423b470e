"""The conditioning portrait: one preparation for every caller.

The token store keeps one portrait per identity (paper section 4.1: the AR model is
conditioned on a single image of the subject). Training reads it from the store; inference
(``generate-points``, ``avatar``, ``evaluate``) prepares a user's image or a captured frame the
same way, through :func:`portrait_crop`, so that the same picture always gives the same
conditioning context whichever command received it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .capture.selection import CaptureSelection

__all__ = ["PORTRAIT_SIZE", "SOURCE_MODES", "to_rgb_uint8", "portrait_crop", "frontal_portrait"]

# Side (pixels) of the stored portraits: DINOv2 runs at 224-518 px (the paper's at 518), so a
# portrait at least this large feeds it without upsampling; the model resizes to its encoder.
PORTRAIT_SIZE = 512
# where training takes each conditioning image: the store's one portrait per identity, or
# views of the identity drawn by :mod:`pointillist_data.store.source_images`
SOURCE_MODES = ("portrait", "views")


def to_rgb_uint8(image: np.ndarray, background: int = 255) -> np.ndarray:
    """Any image array as ``(H, W, 3)`` uint8 RGB.

    Args:
        image: ``(H, W)`` grey, ``(H, W, 1)`` grey, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` RGB or
            ``(H, W, 4)`` RGBA; uint8, uint16 (full range) or float in ``[0, 1]``.
        background: grey level (0..255) that transparent pixels are composited over (white: the
            light backdrop of NeRSemble captures, which the stored portraits show).

    Returns:
        ``(H, W, 3)`` uint8.

    Raises:
        ValueError: not a 2-D image, or a channel count other than 1..4.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or not 1 <= img.shape[-1] <= 4:
        raise ValueError(f"expected an (H, W) or (H, W, 1..4) image, got shape {tuple(np.shape(image))}")
    if img.dtype == np.uint8:
        f = img.astype(np.float64) / 255.0
    elif img.dtype == np.uint16:
        f = img.astype(np.float64) / 65535.0
    elif img.dtype == np.bool_:
        f = img.astype(np.float64)
    else:
        f = np.asarray(img, np.float64)
    c = img.shape[-1]
    color = np.repeat(f[..., :1], 3, -1) if c in (1, 2) else f[..., :3]
    if c in (2, 4):  # straight (not premultiplied) alpha, as PNG stores it
        a = f[..., -1:]
        color = color * a + (background / 255.0) * (1.0 - a)
    if img.dtype == np.uint8 and c == 3:
        return np.ascontiguousarray(img)
    return np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)


def portrait_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The conditioning crop: the centred square of ``image`` (any layout :func:`to_rgb_uint8`
    takes) resized to ``(size, size, 3)`` uint8 (PIL bilinear, antialiased when shrinking;
    aspect kept, never stretched; an image already ``size`` square is returned unchanged).

    Used for the store's portraits (tokenisation), the supervision store's crops and every
    inference path, so that one image gives one conditioning input.

    Raises:
        ValueError: ``size < 1`` or an image :func:`to_rgb_uint8` refuses.
    """
    if size < 1:
        raise ValueError(f"portrait size must be >= 1, got {size}")
    img = to_rgb_uint8(image)
    h, w = img.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    sq = np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side])
    if side == size:
        return sq
    return np.array(Image.fromarray(sq).resize((size, size), Image.BILINEAR))


def frontal_portrait(capture: str | Path, pid: int, sequence: str, size: int,
                     selection: CaptureSelection | None = None) -> np.ndarray:
    """Conditioning image of a participant of a NeRSemble-layout capture: the first selected
    frame of the most frontal selected camera of ``sequence`` (optical axis closest to world
    ``-z``, at the selection's scale), through :func:`portrait_crop`; ``(size, size, 3)`` uint8."""
    from .capture import NersembleSequence
    from .capture.selection import DEFAULT_NERSEMBLE_SCALE

    sel = selection or CaptureSelection()
    seq = NersembleSequence(capture, pid, sequence, scale=sel.effective_scale(DEFAULT_NERSEMBLE_SCALE))
    serials = sel.camera_serials(seq.serials, seq.where)
    serial = min(serials, key=lambda s: seq.cameras[s].world_to_cam[2, 2])
    return portrait_crop(seq.frames(serial, sel.frame_indices(seq.num_frames)[:1])[0], size)
