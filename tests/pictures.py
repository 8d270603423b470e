"""Opening a picture a command wrote and checking that it shows something (issue 29)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Least standard deviation of the pixel values (0..255) of a picture that shows something: a
#: blank or single-colour image has 0, a white page with one thin line under 10.
MIN_STD = 12.0


def open_picture(path: str | Path, min_size: tuple[int, int] = (32, 32), min_std: float = MIN_STD) -> np.ndarray:
    """The RGB pixels ``(H, W, 3)`` uint8 of a PNG, asserting that it is at least ``min_size``
    (width, height) and not blank (pixel standard deviation above ``min_std``)."""
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    assert w >= min_size[0] and h >= min_size[1], f"{path}: {w}x{h} < {min_size}"
    std = float(img.astype(np.float64).std())
    assert std > min_std, f"{path}: blank picture (pixel std {std:.2f})"
    return img
