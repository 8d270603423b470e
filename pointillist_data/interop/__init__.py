"""Importing other tools' outputs as this toolkit's stage outputs.

* :func:`import_vhap` - a VHAP tracking (NeRF-style export, optionally the tracked-parameter
  file) -> the ``track`` stage's outputs;
* :func:`import_gaussian_avatars` - a GaussianAvatars avatar (``point_cloud.ply`` of any SH
  degree + ``flame_param.npz``) -> the ``fit`` stage's outputs.

Both refuse files in other units (ranges: :mod:`.common`; small motion in millimetres or
degrees: where the head lands in the export's masks, :mod:`.units`).

The pipeline command ``pointillist import`` (``pipelines.importers``) writes them into a run's
workspace with stage records so that ``pointillist run`` skips the stages they replace.
Formats: docs/INTEROP.md.
"""

from .common import InteropError
from .gaussian_avatars import find_gaussian_avatars_ply, import_gaussian_avatars
from .vhap import import_vhap

__all__ = ["InteropError", "import_vhap", "import_gaussian_avatars", "find_gaussian_avatars_ply"]
