"""Checks shared by the importers: FLAME parameters from another tool, file linking."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import PointillistError
from ..flame.params import FlameParams

__all__ = ["InteropError", "fit_to_head_model", "check_ranges", "link_or_copy"]

# Plausibility bounds of FLAME parameters in VHAP / GaussianAvatars units (radians, metres,
# unit-variance coefficients). A file in other units (millimetres, degrees) or from another
# model's space fails here instead of giving NaN losses later (CONVENTIONS, upstream traps).
MAX_ANGLE = 2 * np.pi
MAX_TRANSLATION_M = 10.0
MAX_COEFFICIENT = 50.0
MAX_OFFSET_M = 0.1


class InteropError(PointillistError, ValueError):
    """Another tool's output is incomplete, inconsistent or not in the expected units."""


def check_ranges(p: FlameParams, where: str) -> None:
    """Raise :class:`InteropError` naming ``where`` and the key for implausible values."""
    for k in ("rotation", "neck_pose", "jaw_pose"):
        a = float(np.abs(getattr(p, k)).max(initial=0.0))
        if a > MAX_ANGLE:
            raise InteropError(f"{where}: '{k}' reaches {a:.3g} rad (axis-angle in radians expected)")
    a = float(np.abs(p.eyes_pose).max(initial=0.0))
    if a > MAX_ANGLE:
        raise InteropError(f"{where}: 'eyes_pose' reaches {a:.3g} rad (axis-angle in radians expected)")
    t = float(np.abs(p.translation).max(initial=0.0))
    if t > MAX_TRANSLATION_M:
        raise InteropError(f"{where}: 'translation' reaches {t:.3g} (metres expected)")
    for k in ("shape", "expr"):
        c = float(np.abs(getattr(p, k)).max(initial=0.0))
        if c > MAX_COEFFICIENT:
            raise InteropError(f"{where}: '{k}' coefficient {c:.3g} is implausible for FLAME")
    for k in ("static_offset", "dynamic_offset"):
        v = getattr(p, k)
        if v is not None and float(np.abs(v).max(initial=0.0)) > MAX_OFFSET_M:
            raise InteropError(f"{where}: '{k}' reaches {float(np.abs(v).max()):.3g} m (metres expected)")


def fit_to_head_model(p: FlameParams, num_vertices: int, where: str) -> tuple[FlameParams, bool]:
    """Zero-pad vertex offsets of a FLAME without teeth (5023 vertices) to the head model's
    vertex count, as GaussianAvatars does when it loads VHAP parameters.

    Returns:
        ``(params, padded)``.

    Raises:
        InteropError: offsets with more vertices than the head model.
    """
    padded = False
    for k in ("static_offset", "dynamic_offset"):
        v = getattr(p, k)
        if v is None or v.shape[1] == num_vertices:
            continue
        if v.shape[1] > num_vertices:
            raise InteropError(f"{where}: '{k}' has {v.shape[1]} vertices, the head model {num_vertices} "
                               "(is --flame the model the tracking used?)")
        setattr(p, k, np.pad(v, ((0, 0), (0, num_vertices - v.shape[1]), (0, 0))))
        padded = True
    return p, padded


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
