"""The settings of the synthetic capture (:mod:`.synthetic`), kept free of torch so that the
command line builds ``demo-capture``'s options from them without importing it."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SyntheticCaptureConfig", "BACKGROUND_KINDS"]

BACKGROUND_KINDS = ("flat", "textured", "shadowed")
# the NeRSemble v2 frame (pointillist_data.capture.nersemble.FULL_WIDTH / FULL_HEIGHT); repeated
# here because that module imports the colour and video stack
_FULL_WIDTH, _FULL_HEIGHT = 2200, 3208


@dataclass
class SyntheticCaptureConfig:
    """Settings of the synthetic capture (saved as ``capture.json`` beside it); torch-free, so
    ``pointillist demo-capture``'s job extends it without importing torch to start.

    Attributes:
        identities: number of synthetic participants; the first keeps the demo's appearance,
            the others take hair kinds bald, long, short, medium in turn (ground-truth Gaussian
            counts about 49k-130k), with their own head-shape gain, skin and hair colour
            (:func:`.appearance.identity_style`).
        timesteps: frames per sequence.
        sequence: sequence name.
        scale: fraction of the 2200 x 3208 NeRSemble frame (1/20 -> 110 x 160; the frame size
            must be even).
        seed: seed of identities, appearance and rig; identity ``i`` uses ``seed * 1000 + i``.
        first_participant: id of the first participant (written as ``%03d``).
        shape_std: standard deviation of the identity coefficients.
        fps: video frame rate.
        background: ``flat``, ``textured`` or ``shadowed`` (textured with the head's cast
            shadow in the frames only); anything but ``flat`` is recorded in ``capture.json``.
    """

    identities: int = 1
    timesteps: int = 8
    sequence: str = "EXP-1-head"
    scale: float = 1.0 / 20.0
    seed: int = 0
    first_participant: int = 900
    shape_std: float = 0.8
    fps: int = 25
    background: str = field(default="flat", metadata={"choices": BACKGROUND_KINDS})
    participants: list[int] = field(init=False, default_factory=list)  # derived: first_participant + i

    def __post_init__(self) -> None:
        if self.identities < 1 or self.timesteps < 1:
            raise ValueError("identities and timesteps must be >= 1")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        w, h = self.frame_size
        if w % 2 or h % 2:
            raise ValueError(f"scale {self.scale} gives an odd frame size {w}x{h}; H.264 needs even sizes")
        if self.background not in BACKGROUND_KINDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUND_KINDS)}, got {self.background!r}")
        self.participants = [self.first_participant + i for i in range(self.identities)]

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels of every camera's frame (``scale`` of NeRSemble's 2200 x 3208)."""
        return round(_FULL_WIDTH * self.scale), round(_FULL_HEIGHT * self.scale)
