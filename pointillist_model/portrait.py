"""From a portrait to generated point clouds (``pointillist generate-points``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from pointillist_data.fileio import atomic_path, atomic_save_npy, atomic_write_text
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.params import FlameParams
from pointillist_data.portrait import portrait_crop, to_rgb_uint8
from pointillist_data.progress import Progress
from pointillist_data.tokens import QuantBox, decode

from .config import GenerateConfig
from .generate import sample_points
from .train import flame_vertices_for_shapes, load_model
from .trainer_base import load_checkpoint

__all__ = ["GenerateConfig", "identity_shape_from_portrait", "generate_from_portrait", "write_points_ply",
           "portrait_size", "conditioning_portrait"]


def portrait_size(ar_state: dict) -> int:
    """Side (pixels) of the portraits an AR checkpoint was trained on: ``portrait_size``, which
    ``train-ar`` records from its token store; for checkpoints written before it was recorded, the
    image encoder's input size (``model_config["image_size"]``)."""
    if "portrait_size" in ar_state:
        return int(ar_state["portrait_size"])
    return int(ar_state["model_config"]["image_size"])


def conditioning_portrait(image: np.ndarray, ar_state: dict) -> np.ndarray:
    """A user's or a captured image prepared as the AR model's conditioning input, the one
    preparation of ``generate-points``, ``avatar`` and ``evaluate``: any layout
    :func:`~pointillist_data.portrait.to_rgb_uint8` takes (grey, RGBA, ...) -> its centred
    square resized to the training portraits' side (:func:`portrait_size`),
    ``(S, S, 3)`` uint8, framed like the token store's portraits
    (:func:`~pointillist_data.portrait.portrait_crop`)."""
    return portrait_crop(image, portrait_size(ar_state))


def identity_shape_from_portrait(image: np.ndarray, asset: FlameAsset,
                                 progress: Progress | None = None) -> tuple[np.ndarray, str]:
    """FLAME identity coefficients ``(300,)`` from the tracking stage's single-image path for
    ``image`` (any layout :func:`~pointillist_data.portrait.to_rgb_uint8` takes, the whole frame),
    its passes reported to ``progress``; the mean shape (with a warning) when no face is found or
    MediaPipe is missing."""
    try:
        from pointillist_data.tracking.single_image import fit_single_image

        if progress is not None:
            progress.log("fitting FLAME to the portrait (single-image tracking)")
        fit = fit_single_image(to_rgb_uint8(image), asset, progress=progress)
        return fit.params.shape, f"single-image fit ({fit.error_px:.2f} px landmark error)"
    except Exception as e:  # no face, or the landmarks extra is not installed
        warnings.warn(f"single-image FLAME fit failed ({e}); using the mean shape", stacklevel=2)
        return FlameParams.zeros(1).shape, f"mean shape (single-image fit failed: {e})"


def write_points_ply(path: str | Path, points: np.ndarray, binding: np.ndarray) -> Path:
    """PLY with float32 ``x y z`` (canonical, metres) and ``binding_0`` (face index), atomically."""
    arr = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("binding_0", "f4")])
    arr["x"], arr["y"], arr["z"] = points.T
    arr["binding_0"] = binding
    path = Path(path)
    with atomic_path(path, ".ply") as tmp:
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp))
    return path


def generate_from_portrait(checkpoint: str | Path, image: np.ndarray, asset: FlameAsset, out: str | Path,
                           config: GenerateConfig | None = None, *, shape: np.ndarray | None = None,
                           progress: Progress | None = None) -> list[dict]:
    """Generate ``config.num`` point clouds for a portrait ``image`` (``(H, W)``, ``(H, W, 1..4)``;
    prepared by :func:`conditioning_portrait`), the library entry point of
    ``pointillist generate-points`` (settings: :class:`~pointillist_model.config.GenerateConfig`,
    default when ``None``; ``shape``: FLAME identity coefficients ``(300,)``, else fitted to the
    portrait).

    Writes ``points_<i>.ply``, ``tokens_<i>.npy`` (uint16) and ``hidden_<i>.npy`` (``(N, 4, dim)``
    float16: the final hidden states of each point's 4 tokens, for the Gaussian decoder), plus
    ``generate_config.json`` and ``generation.json`` (decoding seconds, steps, tokens/s, the
    seconds spent compiling and the tokens/s without them, and the avatars).

    Returns:
        per avatar: ``points``, ``tokens``, ``ply``, ``degenerate`` (the one-line reason of
        :meth:`~pointillist_model.config.CloudCheckConfig.degenerate`, or ``None``),
        ``shape_source`` and the run's ``tokens_per_s``,
        ``compile_seconds`` and ``decode_tokens_per_s``.

    Raises:
        InputError: invalid settings.
    """
    cfg = config or GenerateConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "generate_config.json")
    ck = load_checkpoint(checkpoint)
    box = QuantBox.from_dict(ck["quant_box"])
    model = load_model(ck, cfg.device)
    how = "given"
    if shape is None:
        shape, how = identity_shape_from_portrait(image, asset, progress)
    verts = flame_vertices_for_shapes(asset, np.asarray(shape)[None]).to(cfg.device)
    img = torch.as_tensor(conditioning_portrait(image, ck), device=cfg.device)[None].expand(cfg.num, -1, -1, -1)
    with torch.no_grad():
        ctx = model.context(img, verts.expand(cfg.num, -1, -1))
    res = sample_points(model, ctx, max_points=cfg.max_points, min_points=cfg.min_points, temperature=cfg.temperature,
                        top_k=cfg.top_k, top_p=cfg.top_p, generator=torch.Generator(cfg.device).manual_seed(cfg.seed),
                        batch_size=cfg.batch_size, num_threads=cfg.num_threads, graph=cfg.graph, progress=progress)
    avatars = []
    for i, (tok, hid) in enumerate(zip(res.tokens, res.hidden, strict=True)):
        pts, bind = decode(tok.numpy(), box, model.config.vocab)
        write_points_ply(out / f"points_{i}.ply", pts, bind)
        atomic_save_npy(out / f"tokens_{i}.npy", tok.numpy().astype(np.uint16))
        atomic_save_npy(out / f"hidden_{i}.npy", hid.float().numpy().reshape(len(pts), 4, -1).astype(np.float16))
        avatars.append({"points": len(pts), "tokens": len(tok), "ply": f"points_{i}.ply",  # relative: relocatable
                        "degenerate": cfg.degenerate(pts, asset.v_template)})
    record = {"shape_source": how, "seconds": round(res.seconds, 3), "steps": res.steps,
              "generated_tokens": res.generated_tokens, "tokens_per_s": round(res.tokens_per_s, 1),
              "compile_seconds": round(res.compile_seconds, 3),
              "decode_tokens_per_s": round(res.decode_tokens_per_s, 1),
              "device": cfg.device, "avatars": avatars}
    atomic_write_text(out / "generation.json", json.dumps(record, indent=1))
    return [{**a, "ply": str(out / a["ply"]), "shape_source": how, **{k: record[k] for k in ("tokens_per_s", "compile_seconds",
                                                                  "decode_tokens_per_s")}} for a in avatars]
