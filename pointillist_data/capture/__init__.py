"""Cameras and capture IO: NeRSemble v2, VHAP's NeRF-style export, and the synthetic capture."""

from .camera import Camera, CameraError, stack_cameras
from .nersemble import NersembleError, NersembleSequence, apply_color_correction, foreground_mask
from .vhap_export import ExportFrame, VhapExportError, read_vhap_export, write_vhap_export
from .video import VideoError

__all__ = ["Camera", "CameraError", "stack_cameras", "NersembleError", "NersembleSequence", "apply_color_correction",
           "foreground_mask", "ExportFrame", "VhapExportError", "read_vhap_export", "write_vhap_export", "VideoError"]
