"""From a portrait to generated point clouds (``pointillist generate-points``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from pointillist_data.fileio import atomic_path
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.params import FlameParams
from pointillist_data.tokens import QuantBox, decode

from .generate import sample_points
from .train import flame_vertices_for_shapes, load_model

__all__ = ["identity_shape_from_portrait", "generate_from_portrait", "write_points_ply"]


def identity_shape_from_portrait(image: np.ndarray, asset: FlameAsset) -> tuple[np.ndarray, str]:
    """FLAME identity coefficients ``(300,)`` from the tracking stage's single-image path;
    the mean shape (with a warning) when no face is found or MediaPipe is missing."""
    try:
        from pointillist_data.tracking.single_image import fit_single_image

        fit = fit_single_image(image, asset)
        return fit.params.shape, f"single-image fit ({fit.error_px:.2f} px landmark error)"
    except Exception as e:  # no face, or the landmarks extra is not installed
        warnings.warn(f"single-image FLAME fit failed ({e}); using the mean shape", stacklevel=2)
        return FlameParams.zeros(1).shape, f"mean shape (single-image fit failed: {e})"


def write_points_ply(path: str | Path, points: np.ndarray, binding: np.ndarray) -> Path:
    """PLY with float32 ``x y z`` (canonical, metres) and ``binding_0`` (face index), atomically."""
    path = Path(path)
    arr = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("binding_0", "f4")])
    arr["x"], arr["y"], arr["z"] = points.T
    arr["binding_0"] = binding
    with atomic_path(path, ".ply") as tmp:
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp))
    return path


def generate_from_portrait(checkpoint: str | Path, image: np.ndarray, asset: FlameAsset, out: str | Path,
                           num: int = 1, max_points: int = 30000, temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = 0.95, seed: int = 0, shape: np.ndarray | None = None,
                           device: str = "cpu") -> list[dict]:
    """Generate ``num`` point clouds for a portrait ``image (H, W, 3)`` uint8.

    Writes ``points_<i>.ply``, ``tokens_<i>.npy`` and ``hidden_<i>.npy`` (``(N, 4, dim)``
    float16: the final hidden states of each point's 4 tokens, for the Gaussian decoder).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    box = QuantBox.from_dict(ck["quant_box"])
    model = load_model(checkpoint, device)
    how = "given"
    if shape is None:
        shape, how = identity_shape_from_portrait(image, asset)
    verts = flame_vertices_for_shapes(asset, np.asarray(shape)[None]).to(device)
    img = torch.as_tensor(image, device=device)[None].expand(num, -1, -1, -1)
    ctx = model.context(img, verts.expand(num, -1, -1))
    res = sample_points(model, ctx, max_points, temperature, top_k, top_p,
                        generator=torch.Generator(device).manual_seed(seed))
    results = []
    for i, (tok, hid) in enumerate(zip(res.tokens, res.hidden, strict=True)):
        pts, bind = decode(tok.numpy(), box, model.config.vocab)
        write_points_ply(out / f"points_{i}.ply", pts, bind)
        np.save(out / f"tokens_{i}.npy", tok.numpy().astype(np.uint16))
        np.save(out / f"hidden_{i}.npy", hid.numpy().reshape(len(pts), 4, -1).astype(np.float16))
        results.append({"points": len(pts), "tokens": len(tok), "shape_source": how, "ply": str(out / f"points_{i}.ply")})
    return results
