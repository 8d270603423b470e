"""A small synthetic identity for decoder tests: token store, supervision store, tiny AR.

The identity is the synthetic capture's appearance model (:func:`make_identity_gaussians`)
subsampled to ``points`` Gaussians, posed by the synthetic motion and rendered by the
project's renderer into the 16-camera rig at the demo resolution (110 x 160) over a white
background, so the views are exactly what those Gaussians look like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pointillist_data.canonical import CANONICAL_PARAMS, canonicalize, to_sample
from pointillist_data.capture.appearance import make_identity_gaussians
from pointillist_data.capture.camera import stack_cameras
from pointillist_data.capture.synthetic import make_rig, synthetic_motion
from pointillist_data.flame import FlameModel, FlameParams
from pointillist_data.flame.frames import face_frames
from pointillist_data.gaussians import BoundGaussians
from pointillist_data.portrait import portrait_crop
from pointillist_data.render import render_gaussians
from pointillist_data.store.supervision import SupervisionSample
from pointillist_data.store.supervision_write import SupervisionStoreConfig, SupervisionStoreWriter
from pointillist_data.store.write import StoreConfig, TokenStoreWriter
from pointillist_data.tokens import DEFAULT_BOX, Vocabulary
from pointillist_model.ar import PRESETS, ARConfig, PointillistAR

HOLDOUT = 8  # VHAP's held-out camera index


def build_world(root: Path, asset, points: int = 1500, timesteps: int = 3, seed: int = 3) -> dict:
    """Write ``store.zarr``, ``supervision.zarr`` and ``ar.pt`` under ``root``."""
    rng = np.random.default_rng(seed)
    shape = np.zeros(300, np.float32)
    shape[: asset.n_shape] = rng.normal(scale=0.8, size=asset.n_shape)
    full = make_identity_gaussians(asset, seed, shape[: asset.n_shape])
    keep = np.sort(rng.choice(len(full), points, replace=False))
    g = BoundGaussians(full.xyz[keep], full.log_scale[keep] + np.log(1.8), full.rotation[keep],
                       full.opacity_logit[keep], full.sh[keep], full.binding[keep])
    motion = synthetic_motion(timesteps, 100, rng)
    T = timesteps
    params = FlameParams(rotation=motion["rotation"], translation=motion["translation"], neck_pose=motion["neck_pose"],
                         jaw_pose=motion["jaw_pose"], eyes_pose=np.zeros((T, 6)), shape=shape, expr=motion["expr"],
                         timestep_id=np.array([f"{t:05d}" for t in range(T)]))
    cams = make_rig(1 / 20, seed)
    vm, Ks = stack_cameras(cams)
    W, H = cams[0].width, cams[0].height
    model = FlameModel(asset)
    rgb = np.zeros((T, len(cams), H, W, 3), np.uint8)
    with torch.no_grad():
        verts = model.forward_params(params.to_torch())["vertices"]
        for t in range(T):
            gg = g.to_global(face_frames(verts[t], model.faces))
            r = render_gaussians(gg["means"], gg["quats"], gg["scales"], gg["opacities"], gg["rgb"], vm, Ks, W, H,
                                 torch.ones(len(cams), 3))
            rgb[t] = (r.rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    cloud = canonicalize(g, params, asset)
    portrait = portrait_crop(rgb[0, int(np.argsort([c.world_to_cam[2, 2] for c in cams])[0])], 32)
    sample = to_sample("901", cloud, portrait, DEFAULT_BOX, Vocabulary(num_faces=asset.num_faces))
    store = root / "store.zarr"
    TokenStoreWriter.create(store, StoreConfig(canonical=CANONICAL_PARAMS, image_size=(32, 32),
                                               tokens_per_shard=1 << 15, tokens_per_chunk=1 << 12,
                                               points_per_shard=1 << 13, points_per_chunk=1 << 10)).append([sample])
    sup = SupervisionSample("901", rgb, np.full(rgb.shape[:4], 255, np.uint8), Ks.double().numpy(),
                            vm.double().numpy(), np.asarray([c.serial for c in cams]), params,
                            np.stack([portrait, portrait_crop(rgb[-1, 7], 32)]), np.array([[0, 7], [T - 1, 7]], np.int32))
    sup_path = root / "supervision.zarr"
    SupervisionStoreWriter.create(sup_path, SupervisionStoreConfig(
        image_size=(H, W), crop_size=(32, 32), crops_per_identity=2, num_vertices=asset.num_vertices,
        views_per_shard=16, rows_per_shard=16)).append([sup])
    torch.manual_seed(seed)
    ar = PointillistAR(ARConfig(**{**PRESETS["tiny"].to_dict(), "num_faces": asset.num_faces}))
    ar_path = root / "ar.pt"
    # never trained: it saw no identity (what evaluate's check reads)
    torch.save({"model_config": ar.config.to_dict(), "model": ar.state_dict(),
                "quant_box": DEFAULT_BOX.to_dict(), "subject_ids": []}, ar_path)
    return {"store": str(store), "supervision": str(sup_path), "ar": str(ar_path), "holdout": cams[HOLDOUT].serial,
            "sample": sample, "supervision_sample": sup, "gaussians": g, "params": params, "cameras": cams}
