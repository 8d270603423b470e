"""Cameras and capture IO: NeRSemble v2, VHAP's NeRF-style export, and the synthetic capture.

The names below are loaded on first use (PEP 562): importing one light submodule, e.g.
:mod:`~pointillist_data.capture.selection` for the command line's options, must not pull in
torch and colour-science, which :mod:`.camera` and :mod:`.nersemble` need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Camera": "camera", "CameraError": "camera", "stack_cameras": "camera",
    "NersembleError": "nersemble", "NersembleSequence": "nersemble", "apply_color_correction": "nersemble",
    "foreground_mask": "nersemble",
    "ExportFrame": "vhap_export", "VhapExportError": "vhap_export", "read_vhap_export": "vhap_export",
    "write_vhap_export": "vhap_export",
    "VideoError": "video",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
