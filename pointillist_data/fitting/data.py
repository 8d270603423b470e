"""Fitting inputs: a tracking export (images, masks, cameras, per-timestep FLAME parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..capture.camera import Camera
from ..capture.vhap_export import read_vhap_export
from ..errors import PointillistError
from ..flame.asset import FlameAsset
from ..flame.frames import FaceFrames, face_frames
from ..flame.model import FlameModel
from ..flame.params import FlameParams

__all__ = ["FittingData", "FittingInputError", "load_export"]


class FittingInputError(PointillistError, ValueError):
    """The tracking outputs are missing, inconsistent with the frames, or non-finite."""


@dataclass
class FittingData:
    """Images ``(N, H, W, 3)`` float composited over the background, their cameras, timestep
    index and split (train / val = held-out camera / test), and the sequence's FLAME params."""

    images: torch.Tensor
    cameras: list[Camera]
    timestep: np.ndarray
    split: np.ndarray
    params: FlameParams
    background: float

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


def load_export(export: str | Path, background: float = 1.0, scale: float = 1.0) -> FittingData:
    """Load a NeRF-style export written by the tracking stage (or VHAP).

    Raises:
        FittingInputError: no export, missing per-timestep parameter files, a timestep with
            no parameters, or NaN / inf parameters (file named).
    """
    export = Path(export)
    try:
        frames = read_vhap_export(export)
    except Exception as e:
        raise FittingInputError(f"{export}: cannot read the tracking export ({e})") from e
    if not frames:
        raise FittingInputError(f"{export}: the export lists no frames")
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
    imgs, cams, ts, sp = [], [], [], []
    for f in frames:
        img = f.image().astype(np.float32) / 255.0
        m = f.mask()
        if m is not None:
            img = img * m[..., None] + background * (1 - m[..., None])
        cam = f.camera
        if scale != 1.0:
            h, w = round(cam.height * scale), round(cam.width * scale)
            img = F.interpolate(torch.as_tensor(img).permute(2, 0, 1)[None], (h, w), mode="area")[0].permute(1, 2, 0).numpy()
            cam = cam.resized(w, h)
        imgs.append(img)
        cams.append(cam)
        ts.append(tindex[f.timestep_index])
        sp.append(split_of.get(str(f.image_path), "train"))
    if len({(c.width, c.height) for c in cams}) > 1:
        raise FittingInputError(f"{export}: images of different sizes")
    return FittingData(torch.as_tensor(np.stack(imgs)), cams, np.asarray(ts), np.asarray(sp), seq, background)
