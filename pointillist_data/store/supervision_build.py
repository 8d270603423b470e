"""One identity's supervision from its capture and tracking (the ``supervise`` stage).

``K`` timesteps evenly spaced over the tracked frames, every camera, frames colour-corrected
and resized by area averaging (never upsampled), foreground masks from the capture
(``alpha_maps`` or the configured ``matting`` method, :meth:`NersembleSequence.masks`), cameras with
``K`` scaled to the stored size, and ``n`` conditioning crops framed like the token store's
portrait (the centred square of the frame, :func:`pointillist_data.portrait.portrait_crop`) from the most frontal
cameras at different timesteps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..capture.nersemble import NersembleSequence
from ..errors import PointillistError
from ..flame.params import FlameParams
from ..portrait import portrait_crop
from ..progress import NULL_PROGRESS, Progress
from .supervision import SupervisionSample
from .supervision_config import SupervisionConfig

__all__ = ["SupervisionConfig", "build_supervision_sample", "frontal_order", "SupervisionBuildError"]


class SupervisionBuildError(PointillistError, ValueError):
    """The tracked parameters do not match the capture (frames missing, no timesteps)."""


def frontal_order(world_to_cam: np.ndarray) -> np.ndarray:
    """Camera indices from most to least frontal (optical axis closest to world ``-z``,
    towards the FLAME face) for ``world_to_cam (C, 4, 4)``."""
    return np.argsort(np.asarray(world_to_cam)[:, 2, 2], kind="stable")


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img
    return np.asarray(Image.fromarray(img).resize(size, Image.BOX))


def build_supervision_sample(capture: str | Path, participant: int, sequence: str | list[str], params: FlameParams,
                             config: SupervisionConfig | None = None, subject_id: str | None = None,
                             progress: Progress | None = None) -> SupervisionSample:
    """Views, masks, cameras, FLAME parameters and crops of one tracked identity.

    Args:
        capture: NeRSemble folder.
        participant: which participant.
        sequence: the sequence tracked, or the sequences tracked together (then the timesteps
            are spread over their union, as the fitting stage trains on it).
        params: the tracked FLAME parameters; ``timestep_id`` is the capture frame (VHAP's
            ``%05d``) for one sequence, ``<sequence>_<frame:05d>`` for several (the tracking
            stage's ids).
        config: :class:`SupervisionConfig`.
        subject_id: id in the stores (default ``%03d`` of the participant).

    Raises:
        SupervisionBuildError: a tracked timestep outside the capture's frames, or naming a
            sequence that was not given.
        NersembleError: the capture is incomplete (from the reader).
    """
    cfg = config or SupervisionConfig()
    progress = progress or NULL_PROGRESS
    names = [sequence] if isinstance(sequence, str) else list(sequence)
    seqs = {n: NersembleSequence(capture, participant, n, cfg.serials, matting=cfg.matting) for n in names}
    seq = seqs[names[0]]
    T = params.num_frames
    ids = [str(t) for t in params.timestep_id] if params.timestep_id is not None else [f"{i:05d}" for i in range(T)]
    try:
        picks = [_split_id(t, names) for t in ids]
    except ValueError as e:
        raise SupervisionBuildError(f"{seq.where}: {e}") from None
    bad = [f"{n}_{f:05d}" for n, f in picks if not 0 <= f < seqs[n].num_frames]
    if not picks or bad:
        raise SupervisionBuildError(f"{seq.where}: tracked timesteps {bad[:3] or ids[:3]}... outside the capture's "
                                    f"frames ({', '.join(f'{n}: {q.num_frames}' for n, q in seqs.items())})")
    keep = np.unique(np.linspace(0, T - 1, min(cfg.timesteps, T)).round().astype(int))
    vw, vh = seq.image_size
    size = cfg.resolution if (cfg.resolution[0] <= vw and cfg.resolution[1] <= vh) else (vw, vh)
    cams = [seq.cameras[s].resized(*size) for s in seq.serials]
    w2c = np.stack([c.world_to_cam for c in cams])
    frontal = frontal_order(w2c)
    n = cfg.crops
    crop_cam = frontal[np.arange(n) % min(n, len(frontal))]
    crop_t = np.linspace(0, len(keep) - 1, n).round().astype(int) if n > 1 else np.array([len(keep) // 2])
    K, C = len(keep), len(seq.serials)
    rgb = np.zeros((K, C, size[1], size[0], 3), np.uint8)
    mask = np.zeros((K, C, size[1], size[0]), np.uint8)
    crops = np.zeros((n, cfg.crop_size, cfg.crop_size, 3), np.uint8)
    with progress.task(f"supervision {seq.where}", total=C) as task:
        for c, serial in enumerate(seq.serials):
            for name in dict.fromkeys(picks[k][0] for k in keep):  # one decode pass per sequence
                ks = [int(i) for i, k in enumerate(keep) if picks[k][0] == name]
                imgs = seqs[name].frames(serial, [picks[keep[i]][1] for i in ks], color_correct=cfg.color_correct)
                ms = seqs[name].masks(serial, [picks[keep[i]][1] for i in ks], images=imgs)
                for j, i in enumerate(ks):
                    rgb[i, c] = _resize(imgs[j], size)
                    # masks are 0..255 already: area means of them, not 255 times them (a dilation)
                    mask[i, c] = np.clip(np.round(_resize(ms[j].astype(np.float32), size)), 0, 255).astype(np.uint8)
                    for q in np.flatnonzero((crop_cam == c) & (crop_t == i)):
                        crops[q] = portrait_crop(imgs[j], cfg.crop_size)
            task.advance(info=serial)
    sub = FlameParams.concatenate([params.frame(int(k)) for k in keep])
    return SupervisionSample(subject_id or f"{participant:03d}", rgb, mask, np.stack([c.K for c in cams]), w2c,
                             np.asarray(seq.serials), sub, crops,
                             np.stack([crop_t, crop_cam], 1).astype(np.int32))


def _split_id(tid: str, names: list[str]) -> tuple[str, int]:
    """``(sequence, frame)`` of a tracking timestep id (``%05d``, or ``<sequence>_%05d`` when
    several sequences were tracked together)."""
    if len(names) == 1 and tid.isdigit():
        return names[0], int(tid)
    name, _, frame = tid.rpartition("_")
    if name not in names or not frame.isdigit():
        raise ValueError(f"timestep id {tid!r} names none of the sequences {names}")
    return name, int(frame)
