"""Gaussians bound to FLAME faces and their GaussianAvatars PLY files.

The PLY is 3DGS's with GaussianAvatars' binding column (CONVENTIONS): float32 fields
``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3 binding_0``;
``x y z`` are LOCAL to the bound face, opacity is a logit, scales are log, rotations wxyz,
and ``binding_0`` is the face index stored as float. ``f_rest`` is channel-major
(all red coefficients, then green, then blue), as 3DGS writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from .errors import PointillistError
from .fileio import atomic_path
from .flame.frames import FaceFrames, local_to_global
from .render.sh import sh_to_rgb

__all__ = ["BoundGaussians", "GaussianPlyError", "ply_field_names", "write_ply", "read_ply"]


class GaussianPlyError(PointillistError, ValueError):
    """A Gaussian PLY is missing fields, has a bad binding or non-finite values."""


def ply_field_names(sh_degree: int = 0) -> list[str]:
    """The exact GaussianAvatars field names for an SH degree."""
    k = (sh_degree + 1) ** 2
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (k - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "binding_0"])


@dataclass
class BoundGaussians:
    """Gaussians in the local frames of FLAME faces (NumPy float32 or torch tensors).

    Attributes:
        xyz: ``(N, 3)`` local positions (units of the face scale ``k``).
        log_scale: ``(N, 3)`` local log-scales.
        rotation: ``(N, 4)`` local wxyz quaternions.
        opacity_logit: ``(N,)``.
        sh: ``(N, K, 3)`` SH coefficients (``sh[:, 0]`` is the DC term).
        binding: ``(N,)`` int64 face index.
    """

    xyz: np.ndarray
    log_scale: np.ndarray
    rotation: np.ndarray
    opacity_logit: np.ndarray
    sh: np.ndarray
    binding: np.ndarray

    def __len__(self) -> int:
        return int(self.binding.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    def validate(self, num_faces: int, where: str = "<memory>") -> None:
        """Raise :class:`GaussianPlyError` for inconsistent shapes, NaN/inf or out-of-range binding."""
        N = len(self)
        for name, arr, shape in (("xyz", self.xyz, (N, 3)), ("log_scale", self.log_scale, (N, 3)),
                                 ("rotation", self.rotation, (N, 4)), ("opacity_logit", self.opacity_logit, (N,))):
            if tuple(arr.shape) != shape:
                raise GaussianPlyError(f"{where}: '{name}' has shape {tuple(arr.shape)}, expected {shape}")
            if not np.all(np.isfinite(np.asarray(arr))):
                raise GaussianPlyError(f"{where}: '{name}' contains NaN or inf")
        b = np.asarray(self.binding)
        if N and (b.min() < 0 or b.max() >= num_faces):
            bad = int(np.flatnonzero((b < 0) | (b >= num_faces))[0])
            raise GaussianPlyError(f"{where}: binding of Gaussian {bad} is {int(b[bad])}, outside [0, {num_faces})")

    def to_torch(self, device: torch.device | str = "cpu", requires_grad: bool = False) -> dict[str, Tensor]:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device).requires_grad_(requires_grad)  # noqa: E731
        return {"xyz": t(self.xyz), "log_scale": t(self.log_scale), "rotation": t(self.rotation),
                "opacity_logit": t(self.opacity_logit), "sh": t(self.sh),
                "binding": torch.as_tensor(np.asarray(self.binding), dtype=torch.long, device=device)}

    @classmethod
    def from_torch(cls, d: dict[str, Tensor]) -> BoundGaussians:
        n = lambda k: d[k].detach().cpu().numpy()  # noqa: E731
        return cls(n("xyz").astype(np.float32), n("log_scale").astype(np.float32), n("rotation").astype(np.float32),
                   n("opacity_logit").astype(np.float32), n("sh").astype(np.float32), n("binding").astype(np.int64))

    def to_global(self, frames: FaceFrames) -> dict[str, Tensor]:
        """Global ``means (N, 3)``, ``scales (N, 3)`` (activated), ``quats (N, 4)``,
        ``opacities (N,)`` (activated) and ``rgb (N, 3)`` (DC colour) under ``frames``."""
        d = self.to_torch(frames.T.device)
        mu, sc, q = local_to_global(frames, d["binding"], d["xyz"], d["log_scale"], d["rotation"])
        return {"means": mu, "scales": sc, "quats": q, "opacities": torch.sigmoid(d["opacity_logit"]),
                "rgb": sh_to_rgb(d["sh"][:, 0]).clamp_min(0), "sh": d["sh"]}


def write_ply(g: BoundGaussians, path: str | Path, num_faces: int | None = None) -> Path:
    """Write a GaussianAvatars PLY atomically (temporary name, then rename).

    Raises:
        GaussianPlyError: the Gaussians fail :meth:`BoundGaussians.validate` (when ``num_faces``).
    """
    path = Path(path)
    if num_faces is not None:
        g.validate(num_faces, str(path))
    N, K = len(g), g.sh.shape[1]
    names = ply_field_names(g.sh_degree)
    rest = np.asarray(g.sh[:, 1:], dtype=np.float32).transpose(0, 2, 1).reshape(N, -1)
    cols = [np.asarray(g.xyz), np.zeros((N, 3)), np.asarray(g.sh[:, 0]), rest,
            np.asarray(g.opacity_logit)[:, None], np.asarray(g.log_scale), np.asarray(g.rotation),
            np.asarray(g.binding, dtype=np.float32)[:, None]]
    data = np.concatenate([np.asarray(c, dtype=np.float32).reshape(N, -1) for c in cols], 1)
    assert data.shape[1] == len(names) and K == (g.sh_degree + 1) ** 2
    arr = np.empty(N, dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        arr[n] = data[:, i]
    with atomic_path(path, ".ply") as tmp:
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp))
    return path


def read_ply(path: str | Path, num_faces: int | None = None) -> BoundGaussians:
    """Read a GaussianAvatars PLY.

    Raises:
        FileNotFoundError: no such file.
        GaussianPlyError: missing fields (named), non-finite values or (with ``num_faces``)
            a binding outside ``[0, num_faces)``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: PLY not found")
    v = PlyData.read(str(path))["vertex"].data
    names = set(v.dtype.names)
    n_rest = len([n for n in names if n.startswith("f_rest_")])
    K = 1 + n_rest // 3
    missing = [n for n in ply_field_names(int(round(K**0.5)) - 1) if n not in names and n not in ("nx", "ny", "nz")]
    if missing:
        raise GaussianPlyError(f"{path}: missing PLY fields {missing}")
    col = lambda *ns: np.stack([np.asarray(v[n], dtype=np.float32) for n in ns], 1)  # noqa: E731
    rest = col(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(len(v), 3, K - 1).transpose(0, 2, 1) if n_rest else \
        np.zeros((len(v), 0, 3), np.float32)
    sh = np.concatenate([col("f_dc_0", "f_dc_1", "f_dc_2")[:, None], rest], 1)
    b = np.asarray(v["binding_0"], dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b != np.round(b)):
        raise GaussianPlyError(f"{path}: binding_0 must hold whole face indices")
    g = BoundGaussians(col("x", "y", "z"), col("scale_0", "scale_1", "scale_2"), col("rot_0", "rot_1", "rot_2", "rot_3"),
                       np.asarray(v["opacity"], dtype=np.float32), sh, b.astype(np.int64))
    g.validate(num_faces if num_faces is not None else int(b.max()) + 1 if len(b) else 1, str(path))
    return g
