"""Options shared by the stage commands and ``run``: what part of a capture to read
(``--scale``, ``--frames``, ``--cameras``, ``--sequences``, see
:mod:`pointillist_data.capture.selection`) and where to look for a face (``--crop``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from pointillist_data.capture.selection import CaptureSelection
from pointillist_data.errors import InputError

__all__ = ["SCALE_OPT", "FRAMES_OPT", "CAMERAS_OPT", "SEQUENCES_OPT", "CROP_OPT", "selection_of", "parse_crop",
           "SelectionFields", "check_crop"]

SCALE_OPT = typer.Option(None, "--scale", help="Frame scale, a fraction of the calibrated resolution (1/4 or 0.25); "
                         "default 1/4 for NeRSemble (550x802, as GaussianAvatars trains), 1 for a video. Never "
                         "upsamples.")
FRAMES_OPT = typer.Option("all", "--frames", help="Frames of each sequence: all, start:stop[:step] (e.g. 0:300:2) "
                          "or a list 0,10,20.")
CAMERAS_OPT = typer.Option(None, "--cameras", help="Cameras: serials (222200037,222200038) or indices (0,8,15); "
                           "default all.")
SEQUENCES_OPT = typer.Option(None, "--sequences", "--sequence", help="Sequences tracked together and fitted on their "
                             "union: names or prefixes (EMO-1,EXP-2), 'all', or 'union' (GaussianAvatars' ten); "
                             "default: the union ones present, else all present.")
CROP_OPT = typer.Option(None, "--crop", help="x0,y0,x1,y1: pixels of the video / image where the face detector "
                        "looks (for small faces in large frames).")


def selection_of(scale: str | None, frames: str | None, cameras: str | None, sequences: str | None) -> CaptureSelection:
    """The :class:`CaptureSelection` of the command-line strings (errors name the option)."""
    return CaptureSelection.from_options(scale, frames, cameras, sequences)


def parse_crop(spec: str | None) -> tuple[float, float, float, float] | None:
    """``"x0,y0,x1,y1"`` -> a box in pixels, or ``None``.

    Raises:
        InputError: not four numbers with x0 < x1 and y0 < y1.
    """
    if not spec:
        return None
    try:
        v = [float(x) for x in spec.split(",")]
    except ValueError:
        v = []
    if len(v) != 4 or v[2] <= v[0] or v[3] <= v[1] or min(v) < 0:
        raise InputError("--crop", f"'{spec}' is not x0,y0,x1,y1 pixels with x0 < x1 and y0 < y1")
    return v[0], v[1], v[2], v[3]


def check_crop(crop: list[float] | tuple[float, ...] | None) -> tuple[float, float, float, float] | None:
    """A face-detector crop ``[x0, y0, x1, y1]`` (pixels) as a tuple, or ``None``.

    Raises:
        ValueError: not four numbers >= 0 with x0 < x1 and y0 < y1 (naming the field ``crop``).
    """
    if crop is None:
        return None
    try:
        v = [float(x) for x in crop]
    except (TypeError, ValueError):
        v = []
    if len(v) != 4 or v[2] <= v[0] or v[3] <= v[1] or min(v) < 0:
        raise ValueError(f"crop: {list(crop)} is not x0,y0,x1,y1 pixels with x0 < x1 and y0 < y1")
    return v[0], v[1], v[2], v[3]


@dataclass(kw_only=True)
class SelectionFields:
    """The part of a capture a stage command reads, as fields of its config (the flags
    ``--sequences``, ``--scale``, ``--frames``, ``--cameras`` of the stage commands and ``run``;
    see :class:`~pointillist_data.capture.selection.CaptureSelection`). A command's config
    inherits them and calls ``super().__post_init__()``.

    Attributes:
        sequences: sequences tracked together and fitted on their union: names or prefixes
            (EMO-1,EXP-2), ``all``, or ``union`` (GaussianAvatars' ten); default: the union
            ones present, else all present.
        scale: frame scale, a fraction of the calibrated resolution (``1/4`` or ``0.25``);
            default 1/4 for NeRSemble (550x802, as GaussianAvatars trains), 1 for a video.
            Never upsamples.
        frames: frames of each sequence: ``all``, ``start:stop[:step]`` (e.g. ``0:300:2``) or
            a list ``0,10,20``.
        cameras: cameras: serials (222200037,222200038) or indices (0,8,15); default all.

    Raises:
        InputError: a malformed value (naming its option).
    """

    sequences: list[str] | None = field(default=None, metadata={"aliases": ("--sequence",)})
    scale: float | None = field(default=None, metadata={"cli_kind": "str"})  # 1/4 or 0.25
    frames: str = "all"
    cameras: list[str] | None = None

    def __post_init__(self) -> None:
        sel = self.selection()
        self.sequences, self.scale, self.frames, self.cameras = sel.sequences, sel.scale, sel.frames, sel.cameras

    def selection(self) -> CaptureSelection:
        """The :class:`CaptureSelection` the stage functions take."""
        return CaptureSelection(self.scale, self.frames, self.cameras, self.sequences)
