"""VHAP's NeRF-style export: ``transforms*.json`` + images, masks and FLAME parameters.

The layout and semantics of VHAP's ``vhap/export_as_nerf_dataset.py`` (what GaussianAvatars
reads; CONVENTIONS "VHAP (tracking) formats")::

    transforms.json, transforms_train.json, transforms_val.json, transforms_test.json
    images/<t:05d>_<c:02d>.png        fg_masks/<t:05d>_<c:02d>.png
    flame_param/<t:05d>.npz           canonical_flame_param.npz

Each frame: ``timestep_index, timestep_index_original, timestep_id, camera_index,
camera_id, cx, cy, fl_x, fl_y, h, w, camera_angle_x, camera_angle_y, transform_matrix,
file_path, fg_mask_path`` (with masks), ``flame_param_path``. The top level repeats the
intrinsics of the last frame (NeRF convention) and lists ``timestep_indices`` and
``camera_indices``.

* ``transform_matrix`` is camera-to-world in OpenGL axes: OpenCV world-to-camera ``M`` is
  written as ``inv(M) @ diag(1, -1, -1, 1)``; ``cy`` is written flipped,
  ``cy_json = h - cy_opencv`` (VHAP's ``opencv->opengl`` conversion), and converted back
  on reading.
* Relocation: like VHAP, the head is moved to the origin - the mean tracked translation is
  subtracted from every timestep's ``translation`` and the cameras are moved with it
  (``transform_matrix = Tr(-mean) @ c2w``), so images project identically.
* Split (VHAP ``split_json``): the first ``ceil(0.7 T)`` timesteps are train, the rest test
  (every camera); with several cameras, camera index 8 (NeRSemble's frontal camera) or the
  last camera when there is no index 8 is held out of train as val over the train
  timesteps; with one camera val is empty.
* Images with masks are composited over white as VHAP's exporter does
  (``uint8(m * rgb + (1 - m) * 255)``, its ``background_color='white'``): GaussianAvatars
  trains on the images as they are (``--white_background``) and never reads the masks.
* Per-timestep ``flame_param/<t:05d>.npz`` and ``canonical_flame_param.npz`` hold numbers
  only (:meth:`FlameParams.save_numeric`); the canonical parameters are VHAP's: identity
  ``shape`` and ``static_offset``, zero expression and pose except ``jaw_pose = (0.3, 0, 0)``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ..errors import PointillistError
from ..flame.params import FlameParams
from .camera import Camera

__all__ = ["ExportFrame", "write_vhap_export", "read_vhap_export", "opencv_to_transform_matrix",
           "transform_matrix_to_opencv", "VhapExportError", "TRAIN_FRACTION", "VAL_CAMERA_INDEX", "vhap_split",
           "vhap_canonical"]

GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
TRAIN_FRACTION = 0.7
VAL_CAMERA_INDEX = 8
CANONICAL_JAW = (0.3, 0.0, 0.0)
_REQUIRED = ("cx", "cy", "fl_x", "fl_y", "w", "h")


class VhapExportError(PointillistError, ValueError):
    """An export folder is incomplete or inconsistent."""


def opencv_to_transform_matrix(world_to_cam: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera ``(4, 4)`` -> OpenGL camera-to-world (``transform_matrix``)."""
    return np.linalg.inv(world_to_cam) @ GL_FLIP


def transform_matrix_to_opencv(transform_matrix: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world ``transform_matrix`` -> OpenCV world-to-camera ``(4, 4)``."""
    return np.linalg.inv(np.asarray(transform_matrix, dtype=np.float64) @ GL_FLIP)


def vhap_split(timestep_indices: list[int], camera_indices: list[int]) -> tuple[list[int], int | None]:
    """VHAP's split: ``(train timesteps, val camera index or None)``; the train timesteps
    are the first ``ceil(0.7 T)``, the rest are test."""
    ts = sorted(timestep_indices)
    n_train = int(math.ceil(len(ts) * TRAIN_FRACTION))
    if len(camera_indices) <= 1:
        return ts[:n_train], None
    return ts[:n_train], VAL_CAMERA_INDEX if VAL_CAMERA_INDEX in camera_indices else sorted(camera_indices)[-1]


def vhap_canonical(params: FlameParams) -> FlameParams:
    """VHAP's ``canonical_flame_param.npz`` contents for ``params``' identity (``T = 1``)."""
    c = FlameParams.zeros(1, len(params.shape), params.expr.shape[1])
    c.shape, c.static_offset = params.shape.copy(), params.static_offset
    c.jaw_pose[0] = CANONICAL_JAW
    return c


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
    timestep_index_original: int = -1

    def image(self) -> np.ndarray:
        return np.asarray(iio.imread(self.image_path))[..., :3]

    def mask(self) -> np.ndarray | None:
        if self.mask_path is None or not self.mask_path.exists():
            return None
        m = np.asarray(iio.imread(self.mask_path))
        return (m[..., 0] if m.ndim == 3 else m).astype(np.float32) / 255.0


def _intrinsics(cam: Camera) -> dict:
    K = cam.K
    return {"cx": float(K[0, 2]), "cy": float(cam.height - K[1, 2]), "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
            "h": cam.height, "w": cam.width,
            "camera_angle_x": 2 * math.atan(cam.width / (2 * K[0, 0])),
            "camera_angle_y": 2 * math.atan(cam.height / (2 * K[1, 1]))}


def _write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=4)
    os.replace(tmp, path)


def write_vhap_export(
    out: str | Path, cameras: list[Camera], images: np.ndarray, masks: np.ndarray | None, params: FlameParams,
    canonical: FlameParams | None = None, val_camera: int | None = None,
    timestep_index_original: list[int] | None = None, relocate: bool = True,
) -> Path:
    """Write a NeRF-style export exactly as VHAP does (see the module docstring).

    Args:
        out: folder to write.
        cameras: ``C`` cameras (OpenCV), all of one image size; camera index = list position.
        images: ``(T, C, H, W, 3)`` uint8.
        masks: ``(T, C, H, W)`` float in [0, 1], or ``None`` (then no ``fg_mask_path`` and the
            images are written as they are); with masks the images are composited over white.
        params: FLAME parameters with ``T`` frames (``timestep_id`` used when set).
        canonical: canonical parameters (default: VHAP's, :func:`vhap_canonical`).
        val_camera: index of the held-out camera (default: VHAP's rule, :func:`vhap_split`).
        timestep_index_original: each timestep's index in the tracked sequence (default
            ``0..T-1``), VHAP's ``timestep_index_original``.
        relocate: move the head to the origin as VHAP does (cameras follow).

    Returns:
        The path of ``transforms.json``.

    Raises:
        VhapExportError: inconsistent sizes.
    """
    out = Path(out)
    T, C = images.shape[:2]
    if len(cameras) != C or params.num_frames != T:
        raise VhapExportError(f"{out}: {C} image columns vs {len(cameras)} cameras, {T} frames vs {params.num_frames} params")
    orig = list(range(T)) if timestep_index_original is None else [int(t) for t in timestep_index_original]
    if len(orig) != T:
        raise VhapExportError(f"{out}: {len(orig)} original timestep indices for {T} timesteps")
    for sub in ("images", "flame_param") + (("fg_masks",) if masks is not None else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    tids = list(params.timestep_id) if params.timestep_id is not None else [f"{t:05d}" for t in range(T)]
    shift = np.eye(4)
    moved = params.frame(slice(None))
    if relocate:
        mean = params.translation.astype(np.float64).mean(0)
        shift[:3, 3] = -mean
        moved.translation = (params.translation - mean).astype(np.float32)
    train_ts, val = vhap_split(list(range(T)), list(range(C)))
    if val_camera is not None:
        val = val_camera
    frames, split = [], {"train": [], "val": [], "test": []}
    for t in range(T):
        moved.frame(t).save_numeric(out / f"flame_param/{t:05d}.npz")
        for c, cam in enumerate(cameras):
            name = f"{t:05d}_{c:02d}"
            img = images[t, c]
            if masks is not None:  # VHAP: (w * fg + (1 - w) * 255).astype(uint8), w = alpha / 255
                a = (np.clip(masks[t, c], 0, 1) * 255 + 0.5).astype(np.uint8)[..., None] / 255.0
                img = (a * img + (1 - a) * 255.0).astype(np.uint8)
            iio.imwrite(out / f"images/{name}.png", img)
            fj = {"timestep_index": t, "timestep_index_original": orig[t], "timestep_id": str(tids[t]),
                  "camera_index": c, "camera_id": cam.serial, **_intrinsics(cam),
                  "transform_matrix": (shift @ opencv_to_transform_matrix(cam.world_to_cam)).tolist(),
                  "file_path": f"images/{name}.png"}
            if masks is not None:
                iio.imwrite(out / f"fg_masks/{name}.png", (np.clip(masks[t, c], 0, 1) * 255 + 0.5).astype(np.uint8))
                fj["fg_mask_path"] = f"fg_masks/{name}.png"
            fj["flame_param_path"] = f"flame_param/{t:05d}.npz"
            frames.append(fj)
            split["test" if t not in train_ts else ("val" if c == val else "train")].append(fj)
    (canonical or vhap_canonical(params)).save_numeric(out / "canonical_flame_param.npz")
    shared = {k: frames[-1][k] for k in (*_REQUIRED, "camera_angle_x", "camera_angle_y")}
    _write_json(out / "transforms.json", {"frames": frames, **shared, "timestep_indices": list(range(T)),
                                          "camera_indices": list(range(C))})
    test_ts = [t for t in range(T) if t not in train_ts]
    cams = {"train": [c for c in range(C) if c != val], "val": [] if val is None else [val], "test": list(range(C))}
    for k, ts in (("train", train_ts), ("val", train_ts), ("test", test_ts)):
        _write_json(out / f"transforms_{k}.json", {**shared, "frames": split[k], "timestep_indices": ts,
                                                   "camera_indices": cams[k]})
    return out / "transforms.json"


def read_vhap_export(folder: str | Path, split: str | None = None) -> list[ExportFrame]:
    """Read an export's frames with OpenCV cameras (``split``: None, train, val or test).

    Intrinsics missing from a frame are taken from the file's top level (NeRF convention);
    the image size is never guessed.

    Raises:
        VhapExportError: missing ``transforms*.json`` or a frame without required fields.
    """
    folder = Path(folder)
    path = folder / ("transforms.json" if split is None else f"transforms_{split}.json")
    if not path.exists():
        raise VhapExportError(f"{path}: not found (is {folder} a tracking export?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VhapExportError(f"{path}: not valid JSON ({e})") from e
    out = []
    for i, f in enumerate(data.get("frames", [])):
        f = {**{k: data[k] for k in _REQUIRED if k in data}, **f}
        missing = [k for k in (*_REQUIRED, "transform_matrix", "file_path") if k not in f]
        if missing:
            raise VhapExportError(f"{path}: frame {i} lacks {missing} (image size is never guessed)")
        w, h = int(f["w"]), int(f["h"])
        K = np.array([[f["fl_x"], 0, f["cx"]], [0, f["fl_y"], h - f["cy"]], [0, 0, 1.0]])
        cam = Camera(transform_matrix_to_opencv(f["transform_matrix"]), K, w, h, str(f.get("camera_id", "")),
                     context=str(path))
        ti = int(f.get("timestep_index", 0))
        out.append(ExportFrame(
            ti, str(f.get("timestep_id", "")), int(f.get("camera_index", 0)), cam,
            folder / f["file_path"], folder / f["fg_mask_path"] if f.get("fg_mask_path") else None,
            folder / f["flame_param_path"] if f.get("flame_param_path") else None,
            int(f.get("timestep_index_original", ti)),
        ))
    return out
