"""VHAP's NeRF-style export: ``transforms.json`` + images, masks and FLAME parameters.

Layout (what GaussianAvatars reads; CONVENTIONS "VHAP (tracking) formats")::

    transforms.json, transforms_train.json, transforms_val.json, transforms_test.json
    images/<t:05d>_<c:02d>.png        fg_masks/<t:05d>_<c:02d>.png
    flame_param/<t:05d>.npz           canonical_flame_param.npz

Each frame: ``timestep_index, timestep_id, camera_index, camera_id, cx, cy, fl_x, fl_y, w, h,
camera_angle_x, camera_angle_y, file_path, fg_mask_path, flame_param_path,
transform_matrix``. ``transform_matrix`` is camera-to-world in OpenGL axes: OpenCV
world-to-camera ``M`` is written as ``inv(M) @ diag(1, -1, -1, 1)``; ``cy`` is written
flipped, ``cy_json = h - cy_opencv`` (VHAP's convention), and converted back on reading.
Split: the first 70 % of timesteps train, the rest test; one frontal camera held out of
train as val.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ..errors import PointillistError
from ..fileio import atomic_write_text
from ..flame.params import FlameParams
from .camera import Camera

__all__ = ["ExportFrame", "write_vhap_export", "read_vhap_export", "opencv_to_transform_matrix",
           "transform_matrix_to_opencv", "VhapExportError", "TRAIN_FRACTION"]

GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
TRAIN_FRACTION = 0.7


class VhapExportError(PointillistError, ValueError):
    """An export folder is incomplete or inconsistent."""


def opencv_to_transform_matrix(world_to_cam: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera ``(4, 4)`` -> OpenGL camera-to-world (``transform_matrix``)."""
    return np.linalg.inv(world_to_cam) @ GL_FLIP


def transform_matrix_to_opencv(transform_matrix: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world ``transform_matrix`` -> OpenCV world-to-camera ``(4, 4)``."""
    return np.linalg.inv(np.asarray(transform_matrix, dtype=np.float64) @ GL_FLIP)


@dataclass
class ExportFrame:
    """One (timestep, camera) image of an export, cameras in OpenCV convention."""

    timestep_index: int
    timestep_id: str
    camera_index: int
    camera: Camera
    image_path: Path
    mask_path: Path | None
    flame_param_path: Path | None

    def image(self) -> np.ndarray:
        return np.asarray(iio.imread(self.image_path))[..., :3]

    def mask(self) -> np.ndarray | None:
        if self.mask_path is None or not self.mask_path.exists():
            return None
        m = np.asarray(iio.imread(self.mask_path))
        return (m[..., 0] if m.ndim == 3 else m).astype(np.float32) / 255.0


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """A mask as uint8 alpha: uint8 kept, bool -> 0 / 255, float in [0, 1] -> rounded 0..255."""
    m = np.asarray(mask)
    if m.dtype == np.uint8:
        return m
    if m.dtype == bool:
        return m.astype(np.uint8) * np.uint8(255)
    return (np.clip(m, 0, 1) * 255 + 0.5).astype(np.uint8)


def _frame_json(t: int, tid: str, c: int, cam: Camera, name: str) -> dict:
    K = cam.K
    return {
        "timestep_index": t, "timestep_id": tid, "camera_index": c, "camera_id": cam.serial,
        "cx": float(K[0, 2]), "cy": float(cam.height - K[1, 2]), "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
        "w": cam.width, "h": cam.height,
        "camera_angle_x": 2 * math.atan(cam.width / (2 * K[0, 0])),
        "camera_angle_y": 2 * math.atan(cam.height / (2 * K[1, 1])),
        "file_path": f"images/{name}.png", "fg_mask_path": f"fg_masks/{name}.png",
        "flame_param_path": f"flame_param/{t:05d}.npz",
        "transform_matrix": opencv_to_transform_matrix(cam.world_to_cam).tolist(),
    }


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def write_vhap_export(
    out: str | Path, cameras: list[Camera], images: np.ndarray, masks: np.ndarray | None, params: FlameParams,
    canonical: FlameParams | None = None, val_camera: int | None = None,
) -> Path:
    """Write a NeRF-style export.

    Args:
        out: folder to write.
        cameras: ``C`` cameras (OpenCV), all of one image size.
        images: ``(T, C, H, W, 3)`` uint8 (an ndarray or a lazy frame array read per frame).
        masks: ``(T, C, H, W)`` uint8 alpha, bool or float in [0, 1], or ``None``.
        params: FLAME parameters with ``T`` frames (``timestep_id`` used when set).
        canonical: canonical parameters (default: ``params``' shape with zero pose/expression).
        val_camera: index of the held-out camera (default: the camera looking most along -z).

    Returns:
        The path of ``transforms.json``.
    """
    out = Path(out)
    T, C = images.shape[:2]
    if len(cameras) != C or params.num_frames != T:
        raise VhapExportError(f"{out}: {C} image columns vs {len(cameras)} cameras, {T} frames vs {params.num_frames} params")
    for sub in ("images", "fg_masks", "flame_param"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    tids = list(params.timestep_id) if params.timestep_id is not None else [f"{t:05d}" for t in range(T)]
    if val_camera is None:  # most frontal: camera z axis closest to world -z
        val_camera = int(np.argmin([c.world_to_cam[2, 2] for c in cameras]))
    frames, split = [], {"train": [], "val": [], "test": []}
    n_train = max(1, int(round(TRAIN_FRACTION * T)))
    for t in range(T):
        params.frame(t).save(out / f"flame_param/{t:05d}.npz")
        for c, cam in enumerate(cameras):
            name = f"{t:05d}_{c:02d}"
            iio.imwrite(out / f"images/{name}.png", np.asarray(images[t, c]))
            if masks is not None:
                iio.imwrite(out / f"fg_masks/{name}.png", mask_to_uint8(masks[t, c]))
            fj = _frame_json(t, tids[t], c, cam, name)
            frames.append(fj)
            split["test" if t >= n_train else ("val" if c == val_camera else "train")].append(fj)
    if canonical is None:
        canonical = FlameParams.zeros(1, len(params.shape), params.expr.shape[1])
        canonical.shape, canonical.static_offset = params.shape.copy(), params.static_offset
    canonical.save(out / "canonical_flame_param.npz")
    head = {"timestep_indices": list(range(T)), "camera_indices": list(range(C)), "val_camera_index": val_camera}
    _write_json(out / "transforms.json", {**head, "frames": frames})
    for k, v in split.items():
        _write_json(out / f"transforms_{k}.json", {**head, "frames": v})
    return out / "transforms.json"


def read_vhap_export(folder: str | Path, split: str | None = None) -> list[ExportFrame]:
    """Read an export's frames with OpenCV cameras (``split``: None, train, val or test).

    Raises:
        VhapExportError: missing ``transforms*.json`` or a frame without required fields.
    """
    folder = Path(folder)
    path = folder / ("transforms.json" if split is None else f"transforms_{split}.json")
    if not path.exists():
        raise VhapExportError(f"{path}: not found (is {folder} a tracking export?)")
    data = json.loads(path.read_text())
    out = []
    for i, f in enumerate(data.get("frames", [])):
        missing = [k for k in ("cx", "cy", "fl_x", "fl_y", "w", "h", "transform_matrix", "file_path") if k not in f]
        if missing:
            raise VhapExportError(f"{path}: frame {i} lacks {missing} (image size is never guessed)")
        w, h = int(f["w"]), int(f["h"])
        K = np.array([[f["fl_x"], 0, f["cx"]], [0, f["fl_y"], h - f["cy"]], [0, 0, 1.0]])
        cam = Camera(transform_matrix_to_opencv(f["transform_matrix"]), K, w, h, str(f.get("camera_id", "")),
                     context=str(path))
        out.append(ExportFrame(
            int(f.get("timestep_index", 0)), str(f.get("timestep_id", "")), int(f.get("camera_index", 0)), cam,
            folder / f["file_path"], folder / f["fg_mask_path"] if f.get("fg_mask_path") else None,
            folder / f["flame_param_path"] if f.get("flame_param_path") else None,
        ))
    return out
