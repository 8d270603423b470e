"""Pinhole cameras in the toolkit's internal convention.

OpenCV world-to-camera ``(4, 4)`` (x right, y down, z forward), intrinsics ``K (3, 3)``
in pixels for an image ``width x height``, pixel centres at integer + 0.5 (CONVENTIONS,
"Units and frames"). The principal point is never assumed centred: resizing by ``s``
scales ``fx, fy, cx, cy``; cropping shifts ``cx, cy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import PointillistError

__all__ = ["Camera", "CameraError", "stack_cameras"]


class CameraError(PointillistError, ValueError):
    """A camera matrix is non-finite, not a rigid transform (rotation, translation, bottom row
    ``[0, 0, 0, 1]``), or K does not fit the image."""


@dataclass
class Camera:
    """One calibrated camera.

    Attributes:
        world_to_cam: ``(4, 4)`` float64 OpenCV world-to-camera (metres).
        K: ``(3, 3)`` float64 intrinsics (pixels).
        width, height: image size in pixels.
        serial: camera id (NeRSemble serial), used in error messages.
    """

    world_to_cam: np.ndarray
    K: np.ndarray
    width: int
    height: int
    serial: str = ""
    context: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.world_to_cam = np.asarray(self.world_to_cam, dtype=np.float64)
        self.K = np.asarray(self.K, dtype=np.float64)
        self.width, self.height = int(self.width), int(self.height)
        where = f"{self.context} camera {self.serial}".strip()
        if self.world_to_cam.shape != (4, 4) or self.K.shape != (3, 3):
            raise CameraError(f"{where}: expected world_to_cam (4, 4) and K (3, 3), got {self.world_to_cam.shape}, {self.K.shape}")
        if not (np.all(np.isfinite(self.world_to_cam)) and np.all(np.isfinite(self.K))):
            raise CameraError(f"{where}: non-finite camera matrix")
        if not np.allclose(self.world_to_cam[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
            raise CameraError(f"{where}: world_to_cam bottom row is {self.world_to_cam[3].tolist()}, not [0, 0, 0, 1]")
        R = self.world_to_cam[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise CameraError(f"{where}: world_to_cam rotation is not a proper rotation")
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"{where}: image size {self.width}x{self.height} is not positive")
        if fx <= 0 or fy <= 0:
            raise CameraError(f"{where}: focal lengths must be positive, got fx={fx}, fy={fy}")
        if not (0 < cx < self.width and 0 < cy < self.height):
            raise CameraError(f"{where}: principal point ({cx:.1f}, {cy:.1f}) outside the {self.width}x{self.height} image")

    @property
    def cam_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_cam)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates (metres)."""
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t

    def resized(self, width: int, height: int) -> Camera:
        """The camera for the image resized to ``width x height`` (K scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, :] *= sx
        K[1, :] *= sy
        return Camera(self.world_to_cam.copy(), K, width, height, self.serial, self.context)

    def scaled(self, s: float) -> Camera:
        """Resize by factor ``s`` (sizes rounded to whole pixels, K scaled to match)."""
        return self.resized(max(1, round(self.width * s)), max(1, round(self.height * s)))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Camera:
        """The camera of the crop ``[x0, x0 + width) x [y0, y0 + height)``."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return Camera(self.world_to_cam.copy(), K, width, height, self.serial, self.context)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(N, 2)`` and depths ``(N,)`` of world points ``(N, 3)``."""
        pc = points @ self.world_to_cam[:3, :3].T + self.world_to_cam[:3, 3]
        uv = pc[:, :2] / pc[:, 2:3] @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, pc[:, 2]


def stack_cameras(cams: Sequence[Camera], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(viewmats (C, 4, 4), Ks (C, 3, 3))`` tensors for :func:`render_gaussians`.

    Raises:
        CameraError: the cameras do not share one image size.
    """
    if len({(c.width, c.height) for c in cams}) > 1:
        raise CameraError("cameras rendered together must share one image size")
    vm = torch.as_tensor(np.stack([c.world_to_cam for c in cams]), dtype=dtype, device=device)
    K = torch.as_tensor(np.stack([c.K for c in cams]), dtype=dtype, device=device)
    return vm, K
