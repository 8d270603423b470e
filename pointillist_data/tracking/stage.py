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
from ..capture.frames import FrameCache
from ..capture.nersemble import NersembleError, NersembleSequence
from ..capture.selection import DEFAULT_NERSEMBLE_SCALE, CaptureSelection
from ..capture.vhap_export import write_vhap_export
from ..capture.video import iter_video, video_info
from ..fileio import atomic_write_text
from ..flame.asset import FlameAsset
from ..flame.model import FlameModel
from ..flame.params import FlameParams, tracked_params_name
from ..progress import NULL_PROGRESS, Progress
from ..viz import contact_sheet, draw_outline, draw_points, draw_text, save_png
from .config import TrackingConfig
from .landmarks import LandmarkError, load_landmarks
from .tracker import FlameTracker, TrackingData, TrackingResult

__all__ = ["load_sequence", "run_tracking", "write_tracking_outputs", "overlay_png", "face_region",
           "vertex_errors", "monocular_data"]


def _landmark_file(landmark_dir: Path, sequence: str, serial: str, single: bool) -> Path:
    """``<dir>/<sequence>/<serial>.npz`` (the landmark stage's layout), or ``<dir>/<serial>.npz``
    for a lone sequence (a folder of VHAP landmark files)."""
    nested = landmark_dir / sequence / f"{serial}.npz"
    return nested if nested.exists() or not single else landmark_dir / f"{serial}.npz"


def _sequence_landmarks(landmark_dir: Path, seq: NersembleSequence, serials: list[str], frames: list[int],
                        single: bool) -> list[np.ndarray | None]:
    out = []
    for s in serials:
        p = _landmark_file(landmark_dir, seq.sequence, s, single)
        cam = seq.cameras[s]  # VHAP's normalised x / w, y / h -> pixels of the frames read
        lm = load_landmarks(p, cam.width, cam.height) if p.exists() else None
        if lm is not None:
            if len(lm) == seq.num_frames and len(frames) != seq.num_frames:
                lm = lm[frames]  # a file over the whole video: keep the selected frames
            elif len(lm) != len(frames):
                raise LandmarkError(f"{p}: {len(lm)} frames of landmarks for {len(frames)} selected frames of "
                                    f"{seq.where} ({seq.num_frames} in the video)")
        out.append(lm)
    return out


def load_sequence(root: str | Path, participant: int, sequence: str | list[str], landmark_dir: str | Path,
                  serials: list[str] | None = None, selection: CaptureSelection | None = None,
                  cache: str | Path | None = None, progress: Progress | None = None,
                  matting: str = "threshold") -> TrackingData:
    """Frames, masks and landmarks of one or several sequences of a NeRSemble participant.

    Several sequences are tracked together (one identity shape and static offset) as one
    timeline whose timestep ids are ``<sequence>_<frame:05d>``; a lone sequence keeps
    ``<frame:05d>``. Each camera's video is decoded once, one frame at a time, at the
    selection's scale (default 1/4 of 2200 x 3208) into a disk cache
    (:class:`~pointillist_data.capture.frames.FrameCache` under ``cache``), so memory does
    not grow with the number of frames; close the cache with ``data.close()``.

    Args:
        sequence: a sequence name or a list of names (resolved already: see
            :func:`pointillist_data.capture.selection.match_sequences`).
        landmark_dir: ``<dir>/<sequence>/<serial>.npz`` (the landmark stage's output), or
            for a lone sequence ``<dir>/<serial>.npz``; VHAP's files (normalised ``x / w``,
            ``y / h``, so independent of the scale), converted to pixels of the frames read;
            a camera without a file gets zero-confidence landmarks (the tracker flags it).
        serials: cameras (default: the selection's, else every camera all sequences have).
        selection: scale, frames and cameras (its ``sequences`` are ignored here).
        cache: parent folder of the frame cache (default ``$TMPDIR``).
        matting: how masks are made without ``alpha_maps/`` (``TrackingConfig.matting``;
            :mod:`pointillist_data.capture.matting`).

    Raises:
        NersembleError: unreadable capture; MattingError: a bad matting spec or weights; LandmarkError: no landmark file for any camera, or
        a file whose frame count matches neither the video nor the selection.
    """
    selection = selection or CaptureSelection()
    names = [sequence] if isinstance(sequence, str) else list(sequence)
    scale = selection.effective_scale(DEFAULT_NERSEMBLE_SCALE)
    seqs = [NersembleSequence(root, participant, n, scale=scale, matting=matting) for n in names]
    common = [s for s in seqs[0].serials if all(s in q.serials for q in seqs[1:])]
    serials = serials or selection.camera_serials(common, seqs[0].where)
    cams = [seqs[0].cameras[s] for s in serials]
    W, H = cams[0].width, cams[0].height
    for q in seqs[1:]:
        if q.image_size != (W, H):
            raise NersembleError(f"{q.where}: frames are {q.image_size}, {seqs[0].sequence}'s {(W, H)}")
    frames = [selection.frame_indices(q.num_frames) for q in seqs]
    landmark_dir = Path(landmark_dir)
    lms = [_sequence_landmarks(landmark_dir, q, serials, f, len(seqs) == 1) for q, f in zip(seqs, frames, strict=True)]
    L = next((lm.shape[1] for per in lms for lm in per if lm is not None), None)
    if L is None:
        raise LandmarkError(f"{landmark_dir}: no landmark file for any camera of participant {int(participant):03d}, "
                            f"sequence(s) {', '.join(names)}")
    landmarks = np.concatenate([np.stack([lm if lm is not None else np.zeros((len(f), L, 3), np.float32)
                                          for lm in per], 1) for per, f in zip(lms, frames, strict=True)])
    T = sum(len(f) for f in frames)
    fc = FrameCache(cache)
    images = fc.array("images", (T, len(serials), H, W, 3))
    masks = fc.array("masks", (T, len(serials), H, W))
    ids, seq_of = [], []
    t0 = 0
    with (progress or NULL_PROGRESS).task(f"decoding {len(names)} sequence(s) x {len(serials)} cameras "
                                          f"at {W}x{H}", total=T * len(serials)) as task:
        for q, f in zip(seqs, frames, strict=True):
            for c, s in enumerate(serials):
                for k, (_, img, m) in enumerate(q.iter_frames_and_masks(s, f)):
                    images[t0 + k, c] = img
                    masks[t0 + k, c] = m
                    task.advance()
            ids += [f"{i:05d}" if len(seqs) == 1 else f"{q.sequence}_{i:05d}" for i in f]
            seq_of += [q.sequence] * len(f)
            t0 += len(f)
    return TrackingData(cams, landmarks, images, masks, ids, sequence_ids=seq_of, cache=fc)


def monocular_data(video: str | Path, landmarks: np.ndarray, focal: float | None = None,
                   max_frames: int | None = None, frames: list[int] | None = None, scale: float = 1.0,
                   cache: str | Path | None = None, progress: Progress | None = None) -> TrackingData:
    """One-camera :class:`TrackingData` for a video: an identity pose camera at the origin
    looking along +z with a focal-length guess (refined by the tracker with ``optimize_focal``).
    Frames are decoded one at a time, whole, into a disk cache (see :func:`load_sequence`;
    removed if decoding fails). ``pointillist track --video`` uses the face crop instead
    (:func:`pointillist_data.tracking.monocular.face_crop_data`).

    Args:
        video: the video file.
        landmarks: ``(T, L, 3)`` landmarks of the frames read (pixels at ``scale``).
        focal: focal length in pixels of the frames read (default: their larger side, a
            ~53 degree field of view).
        max_frames: keep at most this many frames.
        frames: frame indices to read (default all); scale: image scale (<= 1).
    """
    n, H0, W0 = video_info(video)
    frames = list(range(n)) if frames is None else list(frames)
    if max_frames:
        frames = frames[:max_frames]
    landmarks = landmarks[: len(frames)]
    if len(landmarks) != len(frames):
        raise LandmarkError(f"{video}: {len(landmarks)} frames of landmarks for {len(frames)} frames read")
    W, H = (W0, H0) if scale >= 1 else (max(2, round(W0 * scale)), max(2, round(H0 * scale)))
    fc = FrameCache(cache)
    images = fc.array("images", (len(frames), 1, H, W, 3))
    try:
        with (progress or NULL_PROGRESS).task(f"decoding {Path(video).name} at {W}x{H}", total=len(frames)) as task:
            for k, (_, img) in enumerate(iter_video(video, frames, (W, H))):
                images[k, 0] = img
                task.advance()
    except BaseException:  # the cache would live as long as the traceback holding it
        fc.close()
        raise
    f = focal or float(max(W, H))
    cam = Camera(np.eye(4), [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], W, H, "video")
    return TrackingData([cam], landmarks[:, None], images, None, [f"{t:05d}" for t in frames], cache=fc)


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
    atomic_write_text(out / "tracking_record.json", json.dumps(record, indent=1))
    return record


def run_tracking(data: TrackingData, asset: FlameAsset, out: str | Path, config: TrackingConfig | None = None,
                 progress: Progress | None = None, extra_record: dict | None = None,
                 checkpoint: str | Path | None = None) -> dict:
    """Track ``data`` and write the outputs to ``out``; returns the record (with wall time and
    ``extra_record``, e.g. the sequences and selection used).

    Args:
        checkpoint: folder of the tracker's checkpoint (default ``out/checkpoint``; see
            :meth:`FlameTracker.track`): a re-run with the same inputs and configuration
            continues from it; removed when the tracking is done.
    """
    config = config or TrackingConfig()
    t0 = time.perf_counter()
    res = FlameTracker(asset, config).track(data, progress, Path(out) / "checkpoint" if checkpoint is None else checkpoint)
    if data.sequence_ids:
        extra_record = {"sequences": list(dict.fromkeys(data.sequence_ids)), **(extra_record or {})}
    # the export holds every kept frame x camera image: minutes for a long union of sequences
    with (progress or NULL_PROGRESS).task(f"tracking: writing the export ({len(res.kept)} frames) and overlay.png"):
        return write_tracking_outputs(out, asset, data, res, config,
                                      {"wall_s": round(time.perf_counter() - t0, 2), **(extra_record or {})})
