"""The synthetic capture: the embedded default, written in exactly the NeRSemble v2 layout.

``pointillist demo-capture --out DIR`` renders 1..k identities on the demo head (each with a
random identity shape and its own Gaussian appearance, :mod:`.appearance`; identities after the
first also differ in hair kind - bald, long, short, medium in turn - hairline, head-shape gain,
skin tone and hair colour, :func:`.appearance.identity_style`) from a 16-camera
rig laid out like NeRSemble's (frontal hemisphere about 1 m away, the 16 serials), over T
timesteps of expression, jaw and neck motion, at the full 2200 x 3208 frame scaled by
``scale`` (1/20 gives 110 x 160). Ground truth is written beside it::

    <pid>/ground_truth/<SEQ>/flame_params.npz         FLAME parameters per timestep (VHAP keys)
    <pid>/ground_truth/point_cloud.ply, flame_param.npz  the true Gaussians (GaussianAvatars)
    <pid>/ground_truth/<SEQ>/landmark2d/GT/<serial>.npz  2D iBUG-68 landmarks (VHAP format)

``capture.json`` records per participant the ground truth's path, its Gaussian count, the
count per region (skin, hair, ...) and the style (``null`` for the first identity).

``background`` picks what stands behind the head: ``flat`` (the default: a smooth gradient),
``textured`` (wallpaper-like multi-scale colour noise and stripes) or ``shadowed`` (textured,
plus the head's soft cast shadow on the wall in the frames but not in the BACKGROUND plate, as
a real capture's empty-room plate has no shadow). The ground-truth alpha is the same for all
three, so matting can be scored on each (``benchmarks/bench_matting.py``).

Everything is deterministic for a seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from ..flame.asset import FlameAsset
from ..flame.frames import face_frames
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..gaussians import BoundGaussians, write_ply
from ..render import render_gaussians
from ..viz import contact_sheet, look_at_viewmat, save_png
from .appearance import REGION_NAMES, identity_style, make_identity_gaussians, styled_regions
from .camera import Camera, stack_cameras
from .landmarks_io import write_landmarks
from .nersemble import ASSETS, FULL_HEIGHT, FULL_WIDTH, SERIALS, write_nersemble_calibration
from .synthetic_config import BACKGROUND_KINDS, SyntheticCaptureConfig
from .video import write_video

__all__ = ["SyntheticCaptureConfig", "make_rig", "make_synthetic_capture", "synthetic_motion",
           "RIG_TARGET", "capture_kind", "BACKGROUND_KINDS"]

RIG_TARGET = np.array([0.0, -0.02, 0.0])


def make_rig(scale: float, seed: int = 0, distance: float = 1.0) -> list[Camera]:
    """16 cameras in NeRSemble's serial order on the frontal hemisphere around the head.

    Rows at elevations +22, 0 and -20 degrees (5, 6 and 5 cameras) spanning azimuths of
    -75..75 degrees; focal length 5200 px at full resolution; principal points shifted
    off-centre by up to 2 % (never assume a centred principal point).
    """
    rng = np.random.default_rng(seed + 77)
    layout = [(22, a) for a in (-60, -30, 0, 30, 60)] + [(0, a) for a in (-75, -45, -15, 15, 45, 75)] + \
             [(-20, a) for a in (-60, -30, 0, 30, 60)]
    cams = []
    for serial, (el, az) in zip(SERIALS, layout, strict=True):
        e, a = np.radians(el), np.radians(az)
        eye = RIG_TARGET + distance * np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
        K = np.array([[5200.0, 0, FULL_WIDTH / 2 * (1 + rng.uniform(-0.02, 0.02))],
                      [0, 5200.0, FULL_HEIGHT / 2 * (1 + rng.uniform(-0.02, 0.02))], [0, 0, 1]])
        full = Camera(look_at_viewmat(eye, RIG_TARGET), K, FULL_WIDTH, FULL_HEIGHT, serial)
        cams.append(full.resized(round(FULL_WIDTH * scale), round(FULL_HEIGHT * scale)))
    return cams


def synthetic_motion(T: int, n_expr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Smooth per-timestep expression, jaw, neck and head motion ``{key: (T, d)}``."""
    t = np.linspace(0, 1, T)[:, None]
    ph = rng.uniform(0, 2 * np.pi, size=(1, 16))
    expr = np.zeros((T, n_expr))
    k = min(n_expr, 8)
    expr[:, :k] = 1.2 * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.2, size=(1, k)) + ph[:, :k])
    jaw = np.zeros((T, 3))
    jaw[:, 0] = 0.12 * (1 - np.cos(2 * np.pi * t[:, 0] * 1.1 + ph[0, 8])) / 2 + 0.01
    neck = 0.06 * np.sin(2 * np.pi * t * np.array([[0.7, 0.9, 0.5]]) + ph[:, 9:12])
    rot = 0.04 * np.sin(2 * np.pi * t * np.array([[0.6, 0.8, 0.4]]) + ph[:, 12:15])
    trans = 0.004 * np.sin(2 * np.pi * t * np.array([[0.5, 0.7, 0.3]]) + ph[:, 13:16])
    return {"expr": expr, "jaw_pose": jaw, "neck_pose": neck, "rotation": rot, "translation": trans}


def _background(cam: Camera, rng: np.random.Generator) -> np.ndarray:
    h, w = cam.height, cam.width
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(0.35, 0.6) + 0.15 * (yy - 0.5) + 0.05 * rng.normal() * (xx - 0.5)
    tint = np.array([1.0, 0.97, 0.92]) * rng.uniform(0.95, 1.05, size=3)
    return np.clip(base[..., None] * tint, 0, 1).astype(np.float32)


def _textured(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``bg (H, W, 3)`` with wallpaper-like texture: colour value noise at three scales (a
    few cells to a few pixels) and faint stripes, so that a per-pixel threshold meets texture
    edges of every size and colours near skin tones."""
    h, w = bg.shape[:2]
    tex = np.zeros((1, 3, h, w), np.float32)
    for cells, amp in ((3, 0.16), (10, 0.10), (max(12, w // 4), 0.05)):
        grid = torch.from_numpy(rng.uniform(-1, 1, size=(1, 3, cells * h // w + 2, cells + 2)).astype(np.float32))
        tex += amp * torch.nn.functional.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False).numpy()
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.3 * np.arange(h, dtype=np.float32)[:, None]
    stripes = 0.05 * np.sign(np.sin(2 * np.pi * xx / rng.uniform(6, 14)))
    out = bg + tex[0].transpose(1, 2, 0) + stripes[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def _cast_shadow(alpha: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Shading ``(C, H, W, 1)`` in (0, 1] of the head's shadow on the wall for alpha
    ``(C, H, W, 1)``: the silhouette moved down and sideways by a light above and to one side
    (8 % of the width, 5 % of the height) and blurred into a soft penumbra; 1 where lit."""
    c, h, w, _ = alpha.shape
    dx, dy = max(1, round(0.08 * w)), max(1, round(0.05 * h))
    s = np.zeros_like(alpha[..., 0])
    s[:, dy:, dx:] = alpha[:, : h - dy, : w - dx, 0]
    k = max(1, round(0.02 * w))
    s = torch.nn.functional.avg_pool2d(torch.from_numpy(s)[:, None], 2 * k + 1, 1, k, count_include_pad=False)
    return (1.0 - strength * s[:, 0].numpy())[..., None]


def _render_identity(model: FlameModel, gauss: BoundGaussians, params: FlameParams, cams: list[Camera],
                     bgs: np.ndarray, shadow: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``(T, C, H, W, 3)`` uint8, alpha ``(T, C, H, W)`` and landmarks ``(T, C, 68, 3)``;
    with ``shadow`` the background of each frame carries the head's cast shadow."""
    vm, Ks = stack_cameras(cams)
    W, H = cams[0].width, cams[0].height
    faces = model.faces
    fi, _ = model.landmark_embedding("ibug68")
    imgs, alphas, lmks = [], [], []
    with torch.no_grad():
        out = model.forward_params(params.to_torch())
        for t in range(params.num_frames):
            verts = out["vertices"][t]
            g = gauss.to_global(face_frames(verts, faces))
            r = render_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["rgb"], vm, Ks, W, H)
            a = r.alpha.numpy()
            img = r.rgb.numpy() + (1 - a) * (bgs * _cast_shadow(a) if shadow else bgs)
            imgs.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
            alphas.append(a[..., 0])
            L = out["landmarks_ibug68"][t].numpy()
            fn = torch.linalg.cross(verts[faces[fi, 1]] - verts[faces[fi, 0]], verts[faces[fi, 2]] - verts[faces[fi, 0]]).numpy()
            per_cam = []
            for cam in cams:
                uv, _ = cam.project(L.astype(np.float64))
                facing = ((cam.center - L) * fn).sum(1) > 0
                per_cam.append(np.concatenate([uv, facing[:, None].astype(np.float64)], 1))
            lmks.append(np.stack(per_cam))
    return np.stack(imgs), np.stack(alphas), np.stack(lmks)


def make_synthetic_capture(out: str | Path, config: SyntheticCaptureConfig, asset: FlameAsset,
                           progress=None) -> dict:
    """Write the synthetic capture and its ground truth under ``out``; return the summary
    (also saved as ``capture.json``): participants, sequence, image size, cameras."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = FlameModel(asset)
    cams = make_rig(config.scale, config.seed)
    recorded = {k: v for k, v in asdict(config).items() if k != "background" or v != "flat"}  # flat: as before
    summary = {"config": recorded, "flame_source": asset.meta.get("source"), "serials": SERIALS,
               "image_size": [cams[0].width, cams[0].height], "participants": {}}
    for i, pid in enumerate(config.participants):
        rng = np.random.default_rng(config.seed * 1000 + i)
        shape = np.zeros(300, dtype=np.float32)
        shape[: asset.n_shape] = rng.normal(scale=config.shape_std, size=asset.n_shape)
        style = identity_style(i, config.seed)
        if style is not None:
            shape[:3] *= style.shape_gain
        motion = synthetic_motion(config.timesteps, 100, rng)
        T = config.timesteps
        params = FlameParams(rotation=motion["rotation"], translation=motion["translation"],
                             neck_pose=motion["neck_pose"], jaw_pose=motion["jaw_pose"], eyes_pose=np.zeros((T, 6)),
                             shape=shape, expr=motion["expr"], timestep_id=np.array([f"{t:05d}" for t in range(T)]))
        gauss = make_identity_gaussians(asset, config.seed * 1000 + i, shape[: asset.n_shape], style)
        bgs = np.stack([_background(c, rng) for c in cams])
        if config.background != "flat":  # its own generator: the flat capture's draws stay as they were
            trng = np.random.default_rng([config.seed, i, 7])
            bgs = np.stack([_textured(b, trng) for b in bgs])
        imgs, alphas, lmks = _render_identity(model, gauss, params, cams, bgs, config.background == "shadowed")
        write_nersemble_calibration(out, pid, cams)
        for c, cam in enumerate(cams):
            fmt = {"p_id": pid, "seq_name": config.sequence, "serial": cam.serial}
            write_video(out / ASSETS["images"].format(**fmt), imgs[:, c], fps=config.fps)
            bg_path = out / ASSETS["backgrounds"].format(**fmt)
            bg_path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(bg_path, (bgs[c] * 255 + 0.5).astype(np.uint8), quality=95)
            write_landmarks(out / f"{pid:03d}/ground_truth/{config.sequence}/landmark2d/GT/{cam.serial}.npz",
                            lmks[:, c], cam.width, cam.height)
        gt = out / f"{pid:03d}/ground_truth"
        params.save(gt / config.sequence / "flame_params.npz")
        write_ply(gauss, gt / "point_cloud.ply", asset.num_faces)
        params.save(gt / "flame_param.npz")
        np.save(gt / config.sequence / "alpha.npy", alphas.astype(np.float16))
        sheet = contact_sheet(list(imgs[0]), cols=8, labels=[c.serial[-3:] for c in cams])
        save_png(sheet, out / f"{pid:03d}/contact_sheet_{config.sequence}.png")
        per_region = np.bincount(styled_regions(asset, style)[gauss.binding], minlength=len(REGION_NAMES))
        summary["participants"][f"{pid:03d}"] = {
            "gaussians": len(gauss), "shape_seed": config.seed * 1000 + i,
            "ground_truth": f"{pid:03d}/ground_truth/point_cloud.ply",
            "region_gaussians": {n: int(c) for n, c in zip(REGION_NAMES, per_region, strict=True)},
            "style": None if style is None else json.loads(json.dumps(asdict(style)))}  # tuples as lists
        if progress is not None:
            progress(pid)
    (out / "capture.json").write_text(json.dumps(summary, indent=1))
    return summary


def capture_kind(root: str | Path) -> str:
    """``"synthetic"`` for a capture written by :func:`make_synthetic_capture` (its
    ``capture.json`` names the generator's config and rig), else ``"nersemble"``."""
    if "://" in str(root):
        return "nersemble"
    try:
        summary = json.loads((Path(root) / "capture.json").read_text())
    except (OSError, ValueError):
        return "nersemble"
    return "synthetic" if isinstance(summary, dict) and "config" in summary and "serials" in summary else "nersemble"
