"""A square face crop of a monocular video, resampled to a fixed size, and its camera.

Monocular tracking fits the photometric and silhouette terms on the face, not on the whole
frame: a face a few hundred pixels wide in a 1080p or 4K frame is cut out with a margin and
resampled to ``size x size`` pixels (512 by default, metrical-tracker's choice: Zielonka et
al. 2022, "Towards Metrical Reconstruction of Human Faces", its ``crop_image`` step), so the
renderer's cost, the frame cache and the tracker's views do not depend on the video's
resolution. The crop is fixed over the clip (the union of the landmark boxes of every frame
with a face, padded): one camera for every frame, as the tracker expects.

Pixel convention (CONVENTIONS.md, :mod:`pointillist_data.capture.camera`): pixel centres at
integer + 0.5, so a point at continuous pixel ``u`` of the frame lands at
``u' = (u - x0) * s`` in the crop, ``s = size / side``: the crop's intrinsics are
``fx' = s fx``, ``fy' = s fy``, ``cx' = s (cx - x0)``, ``cy' = s (cy - y0)`` (and the skew
scaled by ``s``). The resampling (Pillow's antialiased bilinear filter over the box) follows
the same convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..capture.camera import Camera

__all__ = ["FaceCrop", "face_crop_box", "crop_intrinsics"]


def crop_intrinsics(K: np.ndarray, x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """Intrinsics ``(3, 3)`` float64 of the square crop ``[x0, x0 + side) x [y0, y0 + side)``
    (pixels of the frame) resampled to ``size x size`` pixels: rows 0 and 1 of ``K`` after
    shifting the principal point by ``(x0, y0)``, scaled by ``size / side``.

    Raises:
        ValueError: a non-positive ``side`` or ``size``.
    """
    if side <= 0 or size <= 0:
        raise ValueError(f"crop side and size must be > 0, got {side} and {size}")
    s = size / side
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 2] -= x0
    out[1, 2] -= y0
    out[:2] *= s
    return out


@dataclass(frozen=True)
class FaceCrop:
    """A square box of the frames, ``[x0, x0 + side) x [y0, y0 + side)`` in whole pixels of the
    frames read (it may reach past their edges: the outside is black), resampled to
    ``size x size``.

    Attributes:
        x0, y0: top-left corner (pixels of the frame); side: the box's side (pixels);
        size: the resampled crop's side (pixels).
    """

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return self.size / self.side

    def camera(self, cam: Camera) -> Camera:
        """The camera of the crop (same pose; :func:`crop_intrinsics`)."""
        return Camera(cam.world_to_cam.copy(), crop_intrinsics(cam.K, self.x0, self.y0, self.side, self.size),
                      self.size, self.size, cam.serial, cam.context)

    def frame_camera(self, crop_cam: Camera, width: int, height: int) -> Camera:
        """The inverse of :meth:`camera`: the ``width x height`` frame's camera from the crop's
        (e.g. after the tracker refined the focal length)."""
        K = np.array(crop_cam.K, dtype=np.float64, copy=True)
        K[:2] /= self.scale
        K[0, 2] += self.x0
        K[1, 2] += self.y0
        return Camera(crop_cam.world_to_cam.copy(), K, width, height, crop_cam.serial, crop_cam.context)

    def landmarks(self, lm: np.ndarray) -> np.ndarray:
        """Landmarks ``(..., L, 3)`` (pixels of the frame, confidence) -> pixels of the crop
        (confidence kept), float32."""
        out = np.array(lm, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.x0) * self.scale
        out[..., 1] = (out[..., 1] - self.y0) * self.scale
        return out

    def image(self, frame: np.ndarray) -> np.ndarray:
        """The crop ``(size, size, C)`` uint8 of a frame ``(H, W, C)`` or mask ``(H, W)`` uint8."""
        im = Image.fromarray(np.ascontiguousarray(frame))
        box = (self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)
        # Image.crop fills the part of the box outside the frame with zeros
        return np.asarray(im.crop(box).resize((self.size, self.size), Image.BILINEAR))

    def to_dict(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "side": self.side, "size": self.size}


def face_crop_box(landmarks: np.ndarray, width: int, height: int, size: int = 512,
                  padding: float = 0.5, principal: tuple[float, float] | None = None) -> FaceCrop:
    """The square crop holding every frame's face, fixed over the clip.

    The box is the union of the per-frame landmark boxes (points with confidence > 0), grown
    on each side by ``padding`` times the face's size (the median over frames of the larger
    side of one frame's landmark box: MediaPipe's and iBUG's landmarks stop at the brows and
    the jaw, the silhouette needs the forehead, hair and ears), then made square about its
    centre, and moved inside the frame where it fits; whole pixels.

    Args:
        landmarks: ``(T, L, 3)`` pixels of the ``width x height`` frames and confidence.
        size: side of the resampled crop (pixels).
        padding: margin on each side, as a fraction of the face's size.
        principal: the frame camera's principal point: the box is grown (square) until it
            holds it, as :class:`~pointillist_data.capture.camera.Camera` requires a principal
            point inside the image (a face far off-centre gets a larger, coarser crop).

    Raises:
        ValueError: no landmark with confidence > 0 in any frame, or a bad ``size`` / ``padding``.
    """
    if size < 8 or padding < 0:
        raise ValueError(f"face crop size must be >= 8 and padding >= 0, got {size} and {padding}")
    lm = np.asarray(landmarks, np.float64)
    lo, hi, sizes = [], [], []
    for row in lm:
        ok = row[:, 2] > 0
        if ok.sum() < 2:
            continue
        a, b = row[ok, :2].min(0), row[ok, :2].max(0)
        lo.append(a)
        hi.append(b)
        sizes.append(float((b - a).max()))
    if not sizes:
        raise ValueError("no landmarks in any frame: cannot place a face crop")
    a, b = np.min(lo, 0), np.max(hi, 0)
    margin = padding * float(np.median(sizes))
    centre = (a + b) / 2
    side = max(8, int(np.ceil(float((b - a).max()) + 2 * margin)))
    x0, y0 = (int(np.floor(c - side / 2)) for c in centre)
    # a box that fits in the frame is moved inside it (no black border to explain); a larger
    # one stays centred on the face
    if side <= width:
        x0 = min(max(x0, 0), width - side)
    if side <= height:
        y0 = min(max(y0, 0), height - side)
    if principal is not None:
        px, py = principal
        lo_x, lo_y = min(x0, int(np.floor(px)) - 1), min(y0, int(np.floor(py)) - 1)
        hi_x, hi_y = max(x0 + side, int(np.ceil(px)) + 2), max(y0 + side, int(np.ceil(py)) + 2)
        side = max(hi_x - lo_x, hi_y - lo_y)
        x0, y0 = lo_x, lo_y
    return FaceCrop(x0, y0, side, int(size))
