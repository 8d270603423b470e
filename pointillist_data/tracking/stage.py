"""The tracking stage: NeRSemble sequence (or a monocular video) -> VHAP-compatible outputs.

Outputs in ``out/``::

    tracked_flame_params_<E>.npz VHAP's tracked-parameter file (rotation translation neck_pose jaw_pose
                                 eyes_pose shape expr static_offset timestep_id n_processed_frames
                                 image_size (H, W), focal_length for a monocular video); ``<E>`` = the
                                 global-pass iterations, the ``_<epoch>`` suffix VHAP's exporter parses
    export/                      VHAP's NeRF-style export read by the fitting stage and GaussianAvatars
                                 (transforms*.json, images/, fg_masks/, flame_param/,
                                 canonical_flame_param.npz; see capture.vhap_export)
    config.json                  the TrackingConfig used
    overlay.png                  the tracked mesh over a few cameras and frames
    tracking_record.json         metrics, flagged frames and cameras
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..capture.camera import Camera
from ..capture.nersemble import NersembleSequence
from ..capture.vhap_export import write_vhap_export
from ..capture.video import read_video
from ..flame.asset import FlameAsset
from ..flame.model import FlameModel
from ..flame.params import FlameParams, tracked_params_name
from ..progress import Progress
from ..viz import contact_sheet, draw_outline, draw_points, draw_text, save_png
from .config import TrackingConfig
from .landmarks import LandmarkError, load_landmarks
from .tracker import FlameTracker, TrackingData, TrackingResult

__all__ = ["load_sequence", "run_tracking", "write_tracking_outputs", "overlay_png", "face_region",
           "vertex_errors", "monocular_data"]


def load_sequence(root: str | Path, participant: int, sequence: str, landmark_dir: str | Path,
                  serials: list[str] | None = None) -> TrackingData:
    """Read frames, masks and landmarks of a NeRSemble sequence into :class:`TrackingData`.

    Landmark files are VHAP's (normalised ``x / w``, ``y / h``), converted to pixels with
    each camera's image size. A camera without a landmark file gets zero-confidence
    landmarks (the tracker flags it).
    """
    seq = NersembleSequence(root, participant, sequence, serials)
    imgs = np.stack([seq.frames(s) for s in seq.serials], 1)
    masks = np.stack([seq.masks(s, images=imgs[:, i]) for i, s in enumerate(seq.serials)], 1)
    lms = []
    L = None
    for s in seq.serials:
        p = Path(landmark_dir) / f"{s}.npz"
        cam = seq.cameras[s]
        lm = load_landmarks(p, cam.width, cam.height) if p.exists() else None
        if lm is not None and lm.shape[0] != seq.num_frames:
            raise LandmarkError(f"{p}: {lm.shape[0]} frames of landmarks for {seq.num_frames} video frames")
        L = L or (lm.shape[1] if lm is not None else None)
        lms.append(lm)
    if L is None:
        raise LandmarkError(f"{landmark_dir}: no landmark file for any camera of {seq.where}")
    lms = [lm if lm is not None else np.zeros((seq.num_frames, L, 3), np.float32) for lm in lms]
    return TrackingData([seq.cameras[s] for s in seq.serials], np.stack(lms, 1), imgs, masks,
                        [f"{t:05d}" for t in range(seq.num_frames)])


def monocular_data(video: str | Path, landmarks: np.ndarray, focal: float | None = None,
                   max_frames: int | None = None) -> TrackingData:
    """One-camera :class:`TrackingData` for a video: an identity pose camera at the origin
    looking along +z with a focal-length guess (refined by the tracker with ``optimize_focal``).

    Args:
        video: the video file.
        landmarks: ``(T, L, 3)`` landmarks of its frames.
        focal: focal length in pixels (default: the image's larger side, a ~53 degree field of view).
    """
    frames = read_video(video)
    if max_frames:
        frames, landmarks = frames[:max_frames], landmarks[:max_frames]
    T, H, W, _ = frames.shape
    f = focal or float(max(W, H))
    cam = Camera(np.eye(4), [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], W, H, "video")
    return TrackingData([cam], landmarks[:, None], frames[:, None], None, [f"{t:05d}" for t in range(T)])


def face_region(asset: FlameAsset, shape: np.ndarray | None = None) -> np.ndarray:
    """Vertices ``(V,)`` bool of the face region: between the chin and 1 cm above the brows,
    inside the jaw line, in front of the ears (from the iBUG-68 landmarks), teeth excluded."""
    model = FlameModel(asset, dtype=torch.float64)
    with torch.no_grad():
        out = model(shape=None if shape is None else torch.as_tensor(shape, dtype=torch.float64)[None])
    v, L = out["vertices"][0].numpy(), out["landmarks_ibug68"][0].numpy()
    reg = (v[:, 1] > L[8, 1]) & (v[:, 1] < L[17:27, 1].max() + 0.01)
    reg &= (v[:, 0] > L[0, 0] + 0.01) & (v[:, 0] < L[16, 0] - 0.01) & (v[:, 2] > L[[0, 16], 2].mean())
    if asset.teeth:
        reg[-120:] = False
    return reg


def vertex_errors(asset: FlameAsset, a: FlameParams, b: FlameParams) -> np.ndarray:
    """Per-frame, per-vertex distances ``(T, V)`` in metres between two parameter sets."""
    m = FlameModel(asset, dtype=torch.float64)
    with torch.no_grad():
        va = m.forward_params(a.to_torch(dtype=torch.float64))["vertices"]
        vb = m.forward_params(b.to_torch(dtype=torch.float64))["vertices"]
    return (va - vb).norm(dim=-1).numpy()


def overlay_png(asset: FlameAsset, data: TrackingData, res: TrackingResult, out: str | Path, n_cams: int = 4,
                n_frames: int = 3, tile_width: int = 320) -> Path:
    """A grid of cameras (columns) x timesteps (rows) showing the fit.

    Each tile is the frame (resized to ``tile_width`` pixels) with the tracked mesh's outline
    (silhouette and inner contours, :func:`pointillist_data.viz.draw_outline`) in cyan, the detected landmarks (green), the
    tracked landmarks projected into the camera (red), and the frame's landmark error in
    that camera written on it (mean pixel distance at the original resolution).
    """
    model = FlameModel(asset)
    with torch.no_grad():
        verts = model.forward_params(res.params.to_torch())["vertices"].numpy()
    # the most frontal camera first, then cameras spread over the rig
    frontal = int(np.argmin([c.world_to_cam[2, 2] for c in res.cameras]))
    spread = np.linspace(0, len(res.cameras) - 1, min(n_cams, len(res.cameras))).round().astype(int)
    cams = [frontal] + [int(c) for c in spread if c != frontal][: max(0, n_cams - 1)]
    skin = asset.faces[: asset.num_faces - (168 if asset.teeth else 0)]  # teeth hide behind the lips
    frames = np.unique(np.linspace(0, len(res.kept) - 1, min(n_frames, len(res.kept))).round().astype(int))
    tiles, labels = [], []
    for j in frames:
        t = res.kept[j]
        for c in cams:
            cam = res.cameras[c]
            s = tile_width / cam.width
            w, h = max(1, round(cam.width * s)), max(1, round(cam.height * s))
            small = cam.resized(w, h)
            if data.images is not None:
                from PIL import Image

                bg = np.asarray(Image.fromarray(np.ascontiguousarray(data.images[t, c])).resize((w, h), Image.BILINEAR))
            else:
                bg = np.full((h, w, 3), 40, np.uint8)
            tile = draw_outline(verts[j], skin, small.world_to_cam, small.K, bg)
            text = f"t{res.params.timestep_id[j]} cam {cam.serial[-3:]}"
            if res.projected is not None and res.detected is not None:
                det, proj = res.detected[j, c], res.projected[j, c]
                ok = det[:, 2] > 0
                sx, sy = w / cam.width, h / cam.height
                scale = np.array([sx, sy])
                tile = draw_points(tile, det[:, :2] * scale, (40, 255, 40), 1.6, ok)
                tile = draw_points(tile, proj * scale, (255, 40, 40), 1.2)
                err = float(np.linalg.norm(proj[ok] - det[ok, :2], axis=-1).mean()) if ok.any() else float("nan")
                text += f": {err:.2f} px" if ok.any() else ": no landmarks"
            tiles.append(draw_text(tile, text))
            labels.append("")
    sheet = contact_sheet(tiles, cols=len(cams))
    legend = draw_text(np.full((18, sheet.shape[1], 3), 255, np.uint8),
                       "green: detected landmarks   red: tracked landmarks projected   cyan: tracked mesh outline", (4, 3))
    return save_png(np.concatenate([legend, sheet]), out)


def write_tracking_outputs(out: str | Path, asset: FlameAsset, data: TrackingData, res: TrackingResult,
                           config: TrackingConfig, extra_record: dict | None = None) -> dict:
    """Write every tracking output (see the module docstring) and return the record."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cam0 = res.cameras[0]
    res.params.image_size = np.array([cam0.height, cam0.width])
    res.params.n_processed_frames = len(res.kept)
    # VHAP stores the focal length of an uncalibrated (monocular) camera over max(H, W)
    extra = {"focal_length": np.array([cam0.K[0, 0] / max(cam0.width, cam0.height)], np.float32)} \
        if config.optimize_focal else None
    res.params.save(out / tracked_params_name(config.global_iters), extra)
    config.save(out / "config.json")
    imgs = data.images[res.kept] if data.images is not None else None
    if imgs is not None:
        masks = data.masks[res.kept] if data.masks is not None else None
        write_vhap_export(out / "export", res.cameras, imgs, masks, res.params)
    overlay_png(asset, data, res, out / "overlay.png")
    record = {"metrics": res.metrics, "flagged": res.flagged, "kept": res.kept, **(extra_record or {})}
    (out / "tracking_record.json").write_text(json.dumps(record, indent=1))
    return record


def run_tracking(data: TrackingData, asset: FlameAsset, out: str | Path, config: TrackingConfig | None = None,
                 progress: Progress | None = None) -> dict:
    """Track ``data`` and write the outputs to ``out``; returns the record (with wall time)."""
    config = config or TrackingConfig()
    t0 = time.perf_counter()
    res = FlameTracker(asset, config).track(data, progress)
    return write_tracking_outputs(out, asset, data, res, config, {"wall_s": round(time.perf_counter() - t0, 2)})
