"""Fitting inputs: a tracking export (images, masks, cameras, per-timestep FLAME parameters).

Images are read from the export when the fitter asks for them, through a bounded cache, so
an identity's union of sequences (thousands of timesteps x 16 cameras) fits in memory.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..capture.camera import Camera
from ..capture.nersemble import FULL_HEIGHT, FULL_WIDTH, scaled_size
from ..capture.selection import CaptureSelection, match_sequences
from ..capture.vhap_export import ExportFrame, read_vhap_export
from ..errors import PointillistError
from ..flame.asset import FlameAsset
from ..flame.frames import FaceFrames, face_frames
from ..flame.model import FlameModel
from ..flame.params import FlameParams

__all__ = ["FittingData", "FittingInputError", "ExportImages", "load_export", "split_timestep_id"]


class FittingInputError(PointillistError, ValueError):
    """The tracking outputs are missing, inconsistent with the frames, or non-finite."""


class ExportImages:
    """The training images of an export, read when indexed: ``images[i]`` is image ``i``
    ``(H, W, 3)`` float32 in [0, 1], composited over the background with its mask and
    resized to the fitting scale. Decoded images are kept in a least-recently-used cache of
    at most ``cache_bytes`` (default ``$POINTILLIST_IMAGE_CACHE_MB`` or 1024 MB), so memory
    does not grow with the number of frames and cameras.
    """

    def __init__(self, frames: list[ExportFrame], sizes: list[tuple[int, int]], background: float,
                 cache_bytes: int | None = None) -> None:
        self.frames, self.sizes, self.background = frames, sizes, background
        mb = os.environ.get("POINTILLIST_IMAGE_CACHE_MB")
        self.cache_bytes = cache_bytes if cache_bytes is not None else int(float(mb) * 2**20) if mb else 1 << 30
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, i: int) -> torch.Tensor:
        """Read image ``i`` from disk (no cache)."""
        f = self.frames[i]
        img = f.image().astype(np.float32) / 255.0
        m = f.mask()
        if m is not None:
            img = img * m[..., None] + self.background * (1 - m[..., None])
        w, h = self.sizes[i]
        t = torch.as_tensor(img)
        if (img.shape[1], img.shape[0]) != (w, h):
            t = F.interpolate(t.permute(2, 0, 1)[None], (h, w), mode="area")[0].permute(1, 2, 0).contiguous()
        return t

    def __getitem__(self, i: int) -> torch.Tensor:
        i = int(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        t = self.load(i)
        self._cache[i] = t
        self._bytes += t.numel() * t.element_size()
        while self._bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return t

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


@dataclass
class FittingData:
    """Images (:class:`ExportImages`, ``images[i]`` is ``(H, W, 3)`` float composited over
    the background), their cameras, timestep index and split (train / val = held-out camera
    / test), and the identity's FLAME params (every timestep of every sequence).

    Attributes:
        sequences: the sequences the timesteps come from (from ``<sequence>_<frame>``
            timestep ids; ``[]`` for a single unnamed sequence).
    """

    images: ExportImages
    cameras: list[Camera]
    timestep: np.ndarray
    split: np.ndarray
    params: FlameParams
    background: float
    sequences: list[str] = field(default_factory=list)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def posed_vertices(self, asset: FlameAsset, device: str | torch.device = "cpu") -> torch.Tensor:
        """Tracked mesh vertices ``(T, V, 3)`` at every timestep."""
        model = FlameModel(asset).to(device)
        with torch.no_grad():
            return model.forward_params({k: v.to(device) for k, v in self.params.to_torch().items()})["vertices"]

    def posed_frames(self, asset: FlameAsset, device: str | torch.device = "cpu") -> list[FaceFrames]:
        """Face frames of the tracked mesh at every timestep (fixed FLAME parameters)."""
        faces = torch.as_tensor(asset.faces, device=device)
        return [face_frames(v, faces) for v in self.posed_vertices(asset, device)]


def _split_of(path: Path) -> dict[str, str]:
    out = {}
    for split in ("train", "val", "test"):
        p = path / f"transforms_{split}.json"
        if p.exists():
            for f in read_vhap_export(path, split):
                out[str(f.image_path)] = split
    return out


def split_timestep_id(tid: str) -> tuple[str, int | None]:
    """``"EMO-1-shout+laugh_00012"`` -> ``("EMO-1-shout+laugh", 12)``; ``"00012"`` -> ``("", 12)``;
    anything else -> ``("", None)``."""
    seq, _, num = tid.rpartition("_")
    return (seq, int(num)) if num.isdigit() else ("", None)


def _selected(frames: list[ExportFrame], selection: CaptureSelection | None, where: str) -> list[ExportFrame]:
    """The export frames in ``selection``: sequences (names or prefixes), cameras (serials or
    indices) and video frame numbers (from the timestep ids)."""
    if selection is None:
        return frames
    out = frames
    if selection.sequences is not None:
        present = sorted({split_timestep_id(f.timestep_id)[0] for f in frames} - {""})
        keep = set(match_sequences(selection.sequences, present, where))
        out = [f for f in out if split_timestep_id(f.timestep_id)[0] in keep]
    if selection.cameras is not None:
        serials = list(dict.fromkeys(f.camera.serial for f in frames))
        keep = set(selection.camera_serials(serials, where))
        out = [f for f in out if f.camera.serial in keep]
    if selection.frames != "all":
        nums = [split_timestep_id(f.timestep_id)[1] for f in out]
        n = max((x for x in nums if x is not None), default=-1) + 1
        keep = set(selection.frame_indices(n))
        out = [f for f, x in zip(out, nums, strict=True) if x in keep]
    if not out:
        raise FittingInputError(f"{where}: the selection ({selection.describe()}) keeps no image")
    return out


def load_export(export: str | Path, background: float = 1.0, scale: float = 1.0,
                selection: CaptureSelection | None = None, cache_bytes: int | None = None) -> FittingData:
    """Load a NeRF-style export written by the tracking stage (or VHAP); images are read
    lazily (:class:`ExportImages`).

    Args:
        export: the export folder.
        background: value composited behind masked images.
        scale: image scale (<= 1) relative to the export's images.
        selection: keep only these sequences, cameras and video frames; its ``scale``
            (fraction of the full 2200 x 3208 NeRSemble frame; of the export's images
            otherwise) multiplies ``scale``.
        cache_bytes: size of the decoded-image cache (see :class:`ExportImages`).

    Raises:
        FittingInputError: no export, missing per-timestep parameter files, a timestep with
            no parameters, NaN / inf parameters (file named), or a selection keeping nothing.
    """
    export = Path(export)
    try:
        frames = read_vhap_export(export)
    except Exception as e:
        raise FittingInputError(f"{export}: cannot read the tracking export ({e})") from e
    if not frames:
        raise FittingInputError(f"{export}: the export lists no frames")
    frames = _selected(frames, selection, str(export))
    split_of = _split_of(export)
    steps = sorted({f.timestep_index for f in frames})
    params = []
    for t in steps:
        fp = next(f.flame_param_path for f in frames if f.timestep_index == t)
        if fp is None or not fp.exists():
            raise FittingInputError(f"{export}: FLAME parameters of timestep {t} missing ({fp})")
        try:
            params.append(FlameParams.load(fp))
        except ValueError as e:
            raise FittingInputError(str(e)) from e
    seq = FlameParams.concatenate(params)
    tindex = {t: i for i, t in enumerate(steps)}
    cams, ts, sp, sizes = [], [], [], []
    for f in frames:
        cam = f.camera
        s = scale
        if selection is not None and selection.scale is not None:
            nersemble = abs(cam.width / cam.height - FULL_WIDTH / FULL_HEIGHT) < 0.01
            w, _ = scaled_size(cam.width, cam.height, selection.scale) if nersemble else \
                (cam.width * selection.scale, 0)
            s = scale * min(1.0, w / cam.width)
        if s != 1.0:
            cam = cam.resized(round(cam.width * s), round(cam.height * s))
        cams.append(cam)
        sizes.append((cam.width, cam.height))
        ts.append(tindex[f.timestep_index])
        sp.append(split_of.get(str(f.image_path), "train"))
    if len(set(sizes)) > 1:
        raise FittingInputError(f"{export}: images of different sizes")
    sequences = list(dict.fromkeys(split_timestep_id(f.timestep_id)[0] for f in frames if "_" in f.timestep_id))
    return FittingData(ExportImages(frames, sizes, background, cache_bytes), cams, np.asarray(ts), np.asarray(sp),
                       seq, background, sequences)
