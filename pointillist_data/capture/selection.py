"""What part of a capture a stage reads: image scale, frames, cameras and sequences.

One :class:`CaptureSelection` is given to every stage (``--scale``, ``--frames``,
``--cameras``, ``--sequences`` on each stage command, on ``pointillist run`` and as
``SCALE=``, ``FRAMES=``, ``CAMERAS=``, ``SEQUENCES=`` of ``make data``), so that the landmark,
tracking and fitting stages see the same images.

* **scale**: the fraction of the resolution the calibration is given for (NeRSemble:
  2200 x 3208; a monocular video: its own size). The default for NeRSemble is 1/4
  (550 x 802), the resolution GaussianAvatars trains at (VHAP's ``n_downsample_rgb 4``);
  for a video it is 1. Frames are never upsampled: a video already smaller than the
  requested size is read at its own size. Intrinsics follow the images.
* **frames**: ``all``, a slice ``start:stop[:step]`` (stop exclusive, either may be empty)
  or a list ``0,10,20`` of frame indices into each video.
* **cameras**: ``all`` or a list of serials (``222200037,222200038``) or of indices into
  the capture's camera order (``0,8,15``).
* **sequences**: the sequences of an identity tracked together (one shape and static
  offset) and fitted on the union of their timesteps. Names or prefixes (``EMO-1``
  matches ``EMO-1-shout+laugh``); ``all`` for every sequence present; ``union`` for the ten
  of GaussianAvatars' union setting (:data:`GA_UNION_SEQUENCES`, from VHAP's NeRSemble
  v2 recipe). The default is the union sequences that are present, or every sequence
  present when none of them is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from ..errors import InputError

__all__ = ["CaptureSelection", "GA_UNION_SEQUENCES", "DEFAULT_NERSEMBLE_SCALE", "parse_scale", "parse_frames",
           "parse_list", "match_sequences", "resolve_sequences"]

# VHAP's recipe for GaussianAvatars' union dataset ("UNION10_<pid>_EMO1234EXP234589"):
# the four emotion and six expression sequences; FREE and the sentences are held out.
GA_UNION_SEQUENCES = ("EMO-1", "EMO-2", "EMO-3", "EMO-4", "EXP-2", "EXP-3", "EXP-4", "EXP-5", "EXP-8", "EXP-9")
DEFAULT_NERSEMBLE_SCALE = 0.25


def parse_scale(spec: str | float | None, option: str = "--scale") -> float | None:
    """``"1/4"``, ``"0.25"`` or a number -> float in (0, 1]; ``None`` / ``""`` / ``"default"`` -> None.

    Raises:
        InputError: not a number or a fraction in (0, 1].
    """
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "default")):
        return None
    try:
        v = float(Fraction(spec.strip())) if isinstance(spec, str) else float(spec)
    except (ValueError, ZeroDivisionError):
        raise InputError(option, f"'{spec}' is not a number or a fraction such as 1/4") from None
    if not 0 < v <= 1:
        raise InputError(option, f"{v:g} is not in (0, 1] (frames are downscaled, never upsampled)")
    return v


def parse_list(spec: str | list[str] | tuple[str, ...] | None, all_is_none: bool = True) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; ``None`` or ``""`` -> None (the default), as is ``"all"``
    unless ``all_is_none`` is False (sequences: ``all`` is not their default)."""
    if spec is None:
        return None
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    return None if not items or (all_is_none and items == ["all"]) else items


def parse_frames(spec: str | None, option: str = "--frames") -> str:
    """Validate a frame spec (see the module docstring) and return it normalised.

    Raises:
        InputError: malformed, negative, or a zero step.
    """
    spec = (spec or "all").strip().replace(" ", "")
    if spec == "all":
        return spec
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) > 3 or not all(p == "" or p.isdigit() for p in parts):
            raise InputError(option, f"'{spec}' is not start:stop[:step] with non-negative integers")
        if len(parts) == 3 and parts[2] != "" and int(parts[2]) == 0:
            raise InputError(option, f"'{spec}': the step must be >= 1")
        if parts[0] and parts[1] and int(parts[1]) <= int(parts[0]):
            raise InputError(option, f"'{spec}' selects no frame (stop <= start)")
        return spec
    items = spec.split(",")
    if not all(i.isdigit() for i in items):
        raise InputError(option, f"'{spec}' is not 'all', start:stop[:step] or a list of frame indices 0,10,20")
    return ",".join(str(i) for i in sorted({int(i) for i in items}))


def match_sequences(wanted: list[str] | None, available: list[str], where: str) -> list[str]:
    """Resolve sequence names / prefixes / ``all`` / ``union`` against the sequences present.

    Args:
        wanted: the requested items, or ``None`` for the default (the union sequences
            present, else all present).
        available: sequence folder names present for the participant.
        where: what to name in errors (participant).

    Returns:
        Sequence names, in the order requested (``all``: sorted).

    Raises:
        InputError: a name matching no sequence (the present ones are listed) or several.
    """
    def match(item: str) -> list[str]:
        if item in available:
            return [item]
        return sorted(s for s in available if s.startswith(item + "-"))

    if wanted is None:
        out = [m for p in GA_UNION_SEQUENCES for m in match(p)[:1]]
        if not out:
            out = sorted(available)
        if not out:
            raise InputError(where, "no sequences found")
        return out
    out: list[str] = []
    for item in wanted:
        if item == "all":
            found = sorted(available)
        elif item == "union":
            found = [m for p in GA_UNION_SEQUENCES for m in match(p)[:1]]
        else:
            found = match(item)
            if len(found) > 1:
                raise InputError("--sequences", f"{where}: '{item}' matches several sequences ({', '.join(found)})")
        if not found:
            raise InputError("--sequences", f"{where}: no sequence matches '{item}' "
                             f"(present: {', '.join(sorted(available)) or 'none'})")
        out += [f for f in found if f not in out]
    return out


@dataclass
class CaptureSelection:
    """The part of a capture the stages read (see the module docstring).

    Attributes:
        scale: fraction of the calibrated full resolution, or ``None`` for the source's
            default (NeRSemble 1/4, a video 1).
        frames: frame spec: ``all``, ``start:stop[:step]`` or ``i,j,k``.
        cameras: serials or indices, or ``None`` for every camera.
        sequences: names, prefixes, ``all`` or ``union``; ``None`` for the default.

    Raises:
        InputError: a malformed value (naming the option).
    """

    scale: float | None = None
    frames: str = "all"
    cameras: list[str] | None = None
    sequences: list[str] | None = None

    def __post_init__(self) -> None:
        self.scale = parse_scale(self.scale)
        self.frames = parse_frames(self.frames)
        self.cameras = parse_list(self.cameras)
        self.sequences = parse_list(self.sequences, all_is_none=False)

    @classmethod
    def from_options(cls, scale: str | None = None, frames: str | None = None, cameras: str | None = None,
                     sequences: str | None = None) -> CaptureSelection:
        """From the command-line strings (``None`` = default)."""
        return cls(parse_scale(scale), frames or "all", parse_list(cameras), parse_list(sequences, all_is_none=False))

    def to_dict(self) -> dict:
        return asdict(self)

    def effective_scale(self, default: float) -> float:
        return self.scale if self.scale is not None else default

    def frame_indices(self, num_frames: int) -> list[int]:
        """The selected frame indices of a video with ``num_frames`` frames.

        Raises:
            InputError: indices beyond the video, or nothing selected.
        """
        spec = self.frames
        if spec == "all":
            out = list(range(num_frames))
        elif ":" in spec:
            p = (spec.split(":") + [""])[:3]
            out = list(range(num_frames))[slice(int(p[0]) if p[0] else None, int(p[1]) if p[1] else None,
                                                int(p[2]) if p[2] else None)]
        else:
            out = [int(i) for i in spec.split(",")]
            bad = [i for i in out if i >= num_frames]
            if bad:
                raise InputError("--frames", f"frame(s) {bad} beyond the video's {num_frames} frames")
        if not out:
            raise InputError("--frames", f"'{spec}' selects no frame of a {num_frames}-frame video")
        return out

    def camera_serials(self, available: list[str], where: str) -> list[str]:
        """The selected serials, in the capture's order for ``None``, else as given.

        Raises:
            InputError: an unknown serial or index (the available ones are listed).
        """
        if self.cameras is None:
            return list(available)
        out = []
        for c in self.cameras:
            if c in available:
                out.append(c)
            elif c.isdigit() and len(c) <= 3 and int(c) < len(available):
                out.append(available[int(c)])
            else:
                raise InputError("--cameras", f"{where}: no camera '{c}' (serials: {', '.join(available)}; "
                                 f"or indices 0..{len(available) - 1})")
        if len(set(out)) != len(out):
            raise InputError("--cameras", f"{where}: a camera is listed twice ({', '.join(self.cameras)})")
        return out

    def describe(self) -> str:
        """One line for logs: ``scale 1/4, frames 0:120, cameras all, sequences default``."""
        sc = "default" if self.scale is None else str(Fraction(self.scale).limit_denominator(64))
        return (f"scale {sc}, frames {self.frames}, cameras {','.join(self.cameras) if self.cameras else 'all'}, "
                f"sequences {','.join(self.sequences) if self.sequences else 'default'}")


def resolve_sequences(capture, pid: int, selection: CaptureSelection | None = None) -> list[str]:
    """The sequences of participant ``pid`` in the NeRSemble-layout folder ``capture`` that a
    selection names (default: GaussianAvatars' union sequences present, else all present).

    Raises:
        InputError: a name matching no sequence present, or no sequence at all.
    """
    from .nersemble import list_sequences  # colour-science: loaded only when a capture is read

    sel = selection or CaptureSelection()
    return match_sequences(sel.sequences, list_sequences(capture, pid), f"participant {int(pid):03d} in {capture}")
