"""Matting method specs (``background``, ``rvm:<weights.pth>``...) and their error, kept
free of numpy and torch so that configs validate a spec cheaply and the networks
(:mod:`.matting_nets`) and the methods (:mod:`.matting`) share them without an import cycle."""

from __future__ import annotations

from pathlib import Path

from ..errors import PointillistError

__all__ = ["MattingError", "METHODS", "NEEDS_WEIGHTS", "NEEDS_PLATE", "parse_matting", "check_specs"]

METHODS = ("threshold", "background", "mediapipe", "rvm", "bgmv2")
NEEDS_WEIGHTS = ("rvm", "bgmv2")
NEEDS_PLATE = ("threshold", "background", "bgmv2")


class MattingError(PointillistError, ValueError):
    """A matting method that cannot run: unknown name, missing or unreadable weights, no
    background plate for a method that needs one (the message names the method or file)."""


def parse_matting(spec: str) -> tuple[str, str | None]:
    """``"background"`` -> ``("background", None)``; ``"rvm:/w/rvm.pth"`` -> ``("rvm", "/w/rvm.pth")``.

    Raises:
        MattingError: an unknown method, weights for a method without any, or ``rvm`` /
            ``bgmv2`` without a weights path.
    """
    method, sep, weights = str(spec).partition(":")
    if method not in METHODS:
        raise MattingError(f"matting: '{spec}' is not a method ({', '.join(METHODS[:3])}, rvm:<weights.pth> or "
                           f"bgmv2:<weights.pth>)")
    if method in NEEDS_WEIGHTS and not weights:
        raise MattingError(f"matting: {method} needs user-supplied weights: write '{method}:<path to the .pth file>' "
                           f"(the weights are not shipped or downloaded)")
    if method not in NEEDS_WEIGHTS and sep:
        raise MattingError(f"matting: {method} takes no weights, got '{spec}'")
    return method, (weights or None)


def check_specs(specs: list[str]) -> tuple[bool, list[str]]:
    """Whether any of the matting ``specs`` needs the BACKGROUND plate, and one line per
    problem found before a run starts (a bad spec; a weights file that is not there).
    Weights are only opened when the method runs."""
    plate, problems = False, []
    for spec in dict.fromkeys(specs):
        try:
            method, weights = parse_matting(spec)
        except MattingError as e:
            problems.append(str(e))
            continue
        plate |= method in NEEDS_PLATE
        if weights is not None and not Path(weights).expanduser().is_file():
            problems.append(f"{weights}: {method} weights not found (matting '{spec}')")
    return plate, problems
