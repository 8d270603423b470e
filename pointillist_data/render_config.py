"""The settings of ``pointillist render`` (importable without torch: the command line builds
its options from them at start-up; the rendering is :mod:`pointillist_data.render.fitted`)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .fileio import JsonConfigMixin
from .view_config import ViewSettings

__all__ = ["RenderConfig"]


@dataclass(kw_only=True)
class RenderConfig(ViewSettings, JsonConfigMixin):
    """Settings of ``pointillist render`` (GaussianAvatars' ``render.py``), saved as
    ``render_config.json`` beside its outputs.

    Attributes:
        fit: the avatar folder: the fit stage's output (``point_cloud.ply`` and
            ``flame_param.npz``), an avatar of ``pointillist avatar``, or a GaussianAvatars
            output folder (``point_cloud/iteration_<N>/``, the largest ``N``).
        out: output folder.
        export: a NeRF-style export (``pointillist track`` / VHAP ``export/``) whose cameras
            render the avatar, as GaussianAvatars renders its dataset's cameras; ``None``:
            virtual cameras that follow the head (``views`` of them around it).
        cameras: cameras of ``export`` to render, by ``camera_id`` (serial) or ``camera_index``;
            ``None``: every camera of the export.
        views: virtual cameras around the head, evenly spaced in yaw from the frontal one
            (without ``export``); they follow the head's pose at the first rendered timestep.
        timesteps: timestep indices to render (of ``motion``, else of the avatar's
            ``flame_param.npz``); ``None``: all.
        motion: FLAME parameters (VHAP ``tracked_flame_params_*.npz``, GaussianAvatars
            ``flame_param.npz``, LAM ``flame_params.json`` or a folder of frames) whose expression, jaw, neck, eyes and head pose drive the avatar (its own shape and
            static offset kept: cross-reenactment); ``None``: the avatar's own parameters.
        size: side of the virtual cameras' square images (pixels, even).
        scale: fraction of the export cameras' image size to render at (sizes rounded to even).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    and the view fields of :class:`~pointillist_data.view_config.ViewSettings` (``fov_deg``, ``fps``,
    ``background``; ``size`` here defaults to 512).

    Raises:
        InputError: a value outside the ranges above (the field named).
    """

    fit: str
    out: str
    export: str | None = None
    cameras: list[str] | None = None
    views: int = 1
    timesteps: list[int] | None = None
    motion: str | None = None
    size: int = 512
    scale: float = 1.0
    device: str = "auto"

    def __post_init__(self) -> None:
        self.check_view()
        if self.views < 1:
            raise InputError("views", f"must be >= 1, got {self.views}")
        if not 0 < self.scale <= 4:
            raise InputError("scale", f"must be in (0, 4], got {self.scale}")
        if self.timesteps is not None and (not self.timesteps or min(self.timesteps) < 0):
            raise InputError("timesteps", f"must be indices >= 0, got {self.timesteps}")
        if self.cameras is not None and self.export is None:
            raise InputError("cameras", "name cameras of an --export (without one the cameras are --views virtual "
                                        "ones)")
        if self.cameras is not None and not self.cameras:
            raise InputError("cameras", "name at least one camera")
