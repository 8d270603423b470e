"""Options shared by the stage commands and ``run``: what part of a capture to read
(``--scale``, ``--frames``, ``--cameras``, ``--sequences``, see
:mod:`pointillist_data.capture.selection`) and where to look for a face (``--crop``)."""

from __future__ import annotations

import typer

from pointillist_data.capture.selection import CaptureSelection
from pointillist_data.errors import InputError

__all__ = ["SCALE_OPT", "FRAMES_OPT", "CAMERAS_OPT", "SEQUENCES_OPT", "CROP_OPT", "selection_of", "parse_crop"]

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
