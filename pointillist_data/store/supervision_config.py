"""Settings of the ``supervise`` stage, in a module of their own so that the command line
builds its options from them without importing the capture readers
(:mod:`pointillist_data.store.supervision_build` uses them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..fileio import JsonConfigMixin
from ..portrait import PORTRAIT_SIZE

__all__ = ["SupervisionConfig"]


@dataclass
class SupervisionConfig(JsonConfigMixin):
    """Settings of the supervision stage (saved beside its output).

    Attributes:
        timesteps: tracked timesteps ``K`` kept per identity, evenly spaced (all when fewer).
        resolution: ``(W, H)`` of the stored views; a smaller video keeps its own size
            (default 550 x 802, a quarter of NeRSemble's 2200 x 3208, as GaussianAvatars trains).
        serials: cameras to keep (default: every camera of the capture).
        crops: conditioning crops per identity.
        crop_size: side of the square crops (the token store's portrait size).
        color_correct: apply the capture's colour calibration.
        matting: how masks are made when the capture has no ``alpha_maps/``: ``threshold``
            (fixed background subtraction, the default), ``background`` (shadow- and
            texture-aware), ``mediapipe`` (selfie segmentation, offline), ``rvm:<weights.pth>``
            or ``bgmv2:<weights.pth>`` (user-supplied weights); see
            :mod:`pointillist_data.capture.matting`.
        extra: free-form notes saved with the config (the stage reads none of them).
    """

    timesteps: int = 16
    resolution: tuple[int, int] = (550, 802)
    serials: list[str] | None = None
    crops: int = 4
    crop_size: int = PORTRAIT_SIZE
    color_correct: bool = True
    matting: str = "threshold"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resolution = tuple(int(x) for x in self.resolution)
        if self.timesteps < 1 or self.crops < 1 or self.crop_size < 8:
            raise ValueError("SupervisionConfig: timesteps and crops must be >= 1 and crop_size >= 8")
        if len(self.resolution) != 2 or min(self.resolution) < 8:
            raise ValueError(f"SupervisionConfig.resolution must be (W, H) >= 8, got {self.resolution}")
        from ..capture.matting import parse_matting  # light: no capture reader, no scipy

        parse_matting(self.matting)
