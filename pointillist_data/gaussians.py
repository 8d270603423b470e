"""Gaussians bound to FLAME faces and their GaussianAvatars PLY files.

The PLY is 3DGS's with GaussianAvatars' binding column (CONVENTIONS): float32 fields
``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3 binding_0``;
``x y z`` are LOCAL to the bound face, opacity is a logit, scales are log, rotations wxyz,
and ``binding_0`` is the face index stored as float. ``f_rest`` is channel-major
(all red coefficients, then green, then blue), as 3DGS writes it.

GaussianAvatars (``scene/gaussian_model.py`` ``load_ply``) asserts that the number of
``f_rest_*`` fields is ``3 (D + 1)^2 - 3`` for its ``--sh_degree D`` (default 3); a PLY
written with a higher ``sh_degree`` than its Gaussians have is zero-padded to match.
Quaternions are written normalised (GaussianAvatars normalises when it reads, other 3DGS
tools do not). Reading accepts any SH degree 0..3.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from .errors import PointillistError
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


def write_ply(g: BoundGaussians, path: str | Path, num_faces: int | None = None, sh_degree: int | None = None) -> Path:
    """Write a GaussianAvatars PLY atomically (temporary name, then rename).

    Args:
        g: the Gaussians.
        path: the ``.ply`` to write.
        num_faces: validate bindings against this many faces.
        sh_degree: SH degree of the file (default: the Gaussians'); a higher degree writes
            the missing ``f_rest`` coefficients as zeros (``3`` for GaussianAvatars' default
            ``--sh_degree 3``).

    Raises:
        GaussianPlyError: the Gaussians fail :meth:`BoundGaussians.validate` (when
            ``num_faces``), a zero quaternion, or a ``sh_degree`` below the Gaussians' or above 3.
    """
    path = Path(path)
    if num_faces is not None:
        g.validate(num_faces, str(path))
    N = len(g)
    degree = g.sh_degree if sh_degree is None else int(sh_degree)
    if not g.sh_degree <= degree <= 3:
        raise GaussianPlyError(f"{path}: PLY SH degree {degree} must be in [{g.sh_degree}, 3] (the Gaussians have "
                               f"degree {g.sh_degree})")
    K = (degree + 1) ** 2
    sh = np.zeros((N, K, 3), np.float32)
    sh[:, : g.sh.shape[1]] = np.asarray(g.sh, dtype=np.float32)
    rot = np.asarray(g.rotation, dtype=np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    if N and not np.all(norm > 1e-12):
        raise GaussianPlyError(f"{path}: rotation of Gaussian {int(np.flatnonzero(norm[:, 0] <= 1e-12)[0])} is zero")
    names = ply_field_names(degree)
    rest = sh[:, 1:].transpose(0, 2, 1).reshape(N, -1)
    cols = [np.asarray(g.xyz), np.zeros((N, 3)), sh[:, 0], rest,
            np.asarray(g.opacity_logit)[:, None], np.asarray(g.log_scale), rot / np.where(norm > 0, norm, 1),
            np.asarray(g.binding, dtype=np.float32)[:, None]]
    data = np.concatenate([np.asarray(c, dtype=np.float32).reshape(N, -1) for c in cols], 1)
    assert data.shape[1] == len(names)
    arr = np.empty(N, dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        arr[n] = data[:, i]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        PlyData([PlyElement.describe(arr, "vertex")]).write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_ply(path: str | Path, num_faces: int | None = None) -> BoundGaussians:
    """Read a GaussianAvatars PLY of any SH degree 0..3 (``sh (N, (D+1)^2, 3)``).

    Raises:
        FileNotFoundError: no such file.
        GaussianPlyError: missing fields (named), an ``f_rest`` count of no SH degree 0..3,
            non-finite values or (with ``num_faces``) a binding outside ``[0, num_faces)``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: PLY not found")
    v = PlyData.read(str(path))["vertex"].data
    names = set(v.dtype.names)
    n_rest = len([n for n in names if n.startswith("f_rest_")])
    K = 1 + n_rest // 3
    if n_rest not in (0, 9, 24, 45):
        raise GaussianPlyError(f"{path}: {n_rest} f_rest fields, expected 0, 9, 24 or 45 (SH degree 0..3)")
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
