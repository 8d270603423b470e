"""Canonicalisation: a fitted avatar -> its global point cloud at the canonical FLAME pose.

Paper section 3.1: "we use the canonical FLAME mesh of each identity to compute the
corresponding global canonical Gaussian point cloud". The canonical parameters used here
(recorded in every store as ``canonical``) are the identity's tracked ``shape`` and
``static_offset`` with **zero** expression, rotation, neck, jaw, eyes and translation.
(VHAP's ``canonical_flame_param.npz`` opens the jaw slightly; we do not, so that the
canonical mouth is closed and the sequence does not depend on the tracker's choice.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_savez
from .flame.asset import FlameAsset
from .flame.frames import face_frames, local_to_global
from .flame.model import FlameModel
from .flame.params import FlameParams
from .gaussians import BoundGaussians
from .render.sh import sh_to_rgb
from .store.write import Sample
from .tokens import QuantBox, Vocabulary, encode

__all__ = ["CANONICAL_PARAMS", "CanonicalCloud", "canonicalize", "canonical_vertices", "to_sample"]

CANONICAL_PARAMS = {
    "shape": "tracked identity coefficients", "static_offset": "tracked (added before skinning)",
    "expr": "zeros", "rotation": [0.0, 0.0, 0.0], "neck_pose": [0.0, 0.0, 0.0], "jaw_pose": [0.0, 0.0, 0.0],
    "eyes_pose": [0.0] * 6, "translation": [0.0, 0.0, 0.0],
}


@dataclass
class CanonicalCloud:
    """A canonical global point cloud with its Gaussian attributes (NumPy float32).

    ``points (N, 3)`` metres; ``binding (N,)`` int64; ``rgb (N, 3)``; ``opacity (N,)``
    activated; ``scale (N, 3)`` activated metres; ``rotation (N, 4)`` global wxyz;
    ``flame_shape (300,)``.
    """

    points: np.ndarray
    binding: np.ndarray
    rgb: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    flame_shape: np.ndarray

    def __len__(self) -> int:
        return int(len(self.binding))

    def save(self, path: str | Path) -> Path:
        """Write an npz atomically (with the canonical parameters as JSON)."""
        return atomic_savez(path, **{k: getattr(self, k) for k in self.__dataclass_fields__},
                            canonical=np.asarray(json.dumps(CANONICAL_PARAMS)))

    @classmethod
    def load(cls, path: str | Path) -> CanonicalCloud:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: canonical point cloud not found")
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


def canonical_vertices(asset: FlameAsset, params: FlameParams) -> torch.Tensor:
    """Canonical FLAME vertices ``(V, 3)`` float64 for the identity in ``params``."""
    model = FlameModel(asset, dtype=torch.float64)
    with torch.no_grad():
        kw = {"shape": torch.as_tensor(params.shape, dtype=torch.float64)[None]}
        if params.static_offset is not None:
            kw["static_offset"] = torch.as_tensor(params.static_offset, dtype=torch.float64)
        return model(**kw)["vertices"][0]


def canonicalize(gaussians: BoundGaussians, params: FlameParams, asset: FlameAsset) -> CanonicalCloud:
    """Place fitted Gaussians at the canonical pose (see :data:`CANONICAL_PARAMS`).

    Raises:
        ValueError: a binding outside the model's faces, or non-finite results.
    """
    gaussians.validate(asset.num_faces)
    verts = canonical_vertices(asset, params)
    fr = face_frames(verts, torch.as_tensor(asset.faces))
    d = gaussians.to_torch()
    mu, sc, q = local_to_global(fr, d["binding"], d["xyz"].double(), d["log_scale"].double(), d["rotation"].double())
    q = q / q.norm(dim=-1, keepdim=True)
    out = CanonicalCloud(
        points=mu.float().numpy(), binding=gaussians.binding.astype(np.int64),
        rgb=sh_to_rgb(d["sh"][:, 0]).clamp(0, 1).numpy().astype(np.float32),
        opacity=torch.sigmoid(d["opacity_logit"]).numpy().astype(np.float32),
        scale=sc.float().numpy(), rotation=q.float().numpy(),
        flame_shape=np.pad(params.shape, (0, max(0, 300 - len(params.shape))))[:300].astype(np.float32),
    )
    if not np.all(np.isfinite(out.points)):
        raise ValueError("canonical point cloud has non-finite positions")
    return out


def to_sample(subject_id: str, cloud: CanonicalCloud, image: np.ndarray, box: QuantBox, vocab: Vocabulary,
              out_of_box: str = "error") -> Sample:
    """Tokenize a canonical cloud and order its attributes like its tokens."""
    tokens, order = encode(cloud.points, cloud.binding, box, vocab, out_of_box=out_of_box, return_order=True)
    return Sample(subject_id=subject_id, tokens=tokens, points=cloud.points[order],
                  binding=cloud.binding[order].astype(np.int32), rgb=cloud.rgb[order], opacity=cloud.opacity[order],
                  scale=cloud.scale[order], rotation=cloud.rotation[order], flame_shape=cloud.flame_shape,
                  image=np.asarray(image, np.uint8))
