"""Settings of ``pointillist animate`` (torch-free: the command line reads them at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from ..fileio import JsonConfigMixin
from ..view_config import ViewSettings

__all__ = ["AnimateConfig", "ANIMATION_CHOICES"]

#: :data:`pointillist_data.animation.MODES` without importing torch (a test keeps them equal).
ANIMATION_CHOICES = ("barycentric", "face_frame")


@dataclass
class AnimateConfig(ViewSettings, JsonConfigMixin):
    """Settings of ``pointillist animate`` (saved beside its outputs as ``animate_config.json``).

    Attributes:
        size: side of each square panel (pixels, even); the video is two panels wide
            (driver | avatar).
        max_frames: render at most the motion's first this many frames (``None``: all).
        animation: ``face_frame`` (GaussianAvatars: each Gaussian rigid in its face's frame) or
            ``barycentric`` (the paper's section 4.3); ``None``: the mode an ``avatar`` folder
            records in ``avatar.json``, else ``face_frame`` (how ``fit`` and GaussianAvatars
            train their PLYs).
        background: grey level behind the avatar and the driver (0..1).
        fov_deg, fps: see :class:`~pointillist_data.view_config.ViewSettings`.
        device: torch device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        InputError: an odd or tiny ``size``, ``fov_deg`` outside (0, 180), ``fps`` or
            ``max_frames`` below 1, an unknown ``animation``, ``background`` outside [0, 1].
    """

    max_frames: int | None = None
    animation: str | None = field(default=None, metadata={"choices": ANIMATION_CHOICES})
    device: str = "auto"

    def __post_init__(self) -> None:
        self.check_view()
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError("max_frames", f"must be >= 1, got {self.max_frames}")
        if self.animation is not None and self.animation not in ANIMATION_CHOICES:
            raise InputError("animation", f"must be one of {ANIMATION_CHOICES}, got '{self.animation}'")
