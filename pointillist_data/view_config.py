"""The view settings every command that renders an avatar shares (``render``, ``animate``,
``avatar``): one definition of their fields, defaults and checks (torch-free: the command line
builds its options from them at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

__all__ = ["ViewSettings"]


@dataclass
class ViewSettings:
    """Square virtual views of a head: image side, field of view, frame rate and backdrop.

    Attributes:
        size: side of the rendered square images (pixels, even: H.264 needs even sizes).
        fov_deg: vertical field of view of the render cameras (degrees).
        fps: video frame rate (frames per second).
        background: grey level behind the avatar (0 black .. 1 white).

    Raises:
        InputError: an odd or tiny ``size`` (< 8), ``fov_deg`` outside (0, 180), ``fps`` below
            1, ``background`` outside [0, 1] (the field named). Subclasses call
            :meth:`check_view` from their ``__post_init__``.
    """

    size: int = 256
    fov_deg: float = 20.0
    fps: int = 25
    background: float = 1.0

    def check_view(self) -> None:
        """Validate the view fields (see the class's ``Raises``)."""
        if self.size < 8 or self.size % 2:
            raise InputError("size", f"must be even and >= 8, got {self.size}")
        if not 0 < self.fov_deg < 180:
            raise InputError("fov_deg", f"must be in (0, 180) degrees, got {self.fov_deg}")
        if self.fps < 1:
            raise InputError("fps", f"must be >= 1, got {self.fps}")
        if not 0 <= self.background <= 1:
            raise InputError("background", f"must be in [0, 1], got {self.background}")

    def __post_init__(self) -> None:
        self.check_view()
