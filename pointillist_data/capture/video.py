"""Per-camera video IO (mp4) through PyAV / imageio."""

from __future__ import annotations

import os
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np

__all__ = ["read_video", "write_video", "video_info"]


def video_info(path: str | Path) -> tuple[int, int, int]:
    """``(num_frames, height, width)`` of a video without decoding every frame's pixels."""
    # PyAV directly: imageio's plugin runs gc.collect() on every close, which costs a
    # fifth of a second in a process holding torch
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.frames > 0:
            return int(s.frames), int(s.codec_context.height), int(s.codec_context.width)
    props = iio.improps(path, plugin="pyav")
    n, h, w = props.shape[0], props.shape[1], props.shape[2]
    return int(n), int(h), int(w)


def read_video(path: str | Path, frames: list[int] | None = None) -> np.ndarray:
    """Decode frames ``(T, H, W, 3)`` uint8 RGB (all, or the listed indices)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    # one sequential decode (imageio opens, seeks and garbage-collects once per index)
    want = None if frames is None else [int(i) for i in frames]
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        last = -1 if want is None else max(want, default=-1)
        for i, f in enumerate(c.decode(video=0)):
            if want is None or i in want:
                got[i] = f.to_ndarray(format="rgb24")
            if want is not None and i >= last:
                break
    if want is None:
        return np.stack([got[i] for i in sorted(got)])
    missing = [i for i in want if i not in got]
    if missing:
        raise IndexError(f"{path}: frame(s) {missing} beyond the video's {len(got) and max(got) + 1} frames")
    return np.stack([got[i] for i in want]) if want else np.zeros((0, 0, 0, 3), np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25, crf: int = 8) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 frames as H.264 (yuv420p, even sizes) atomically.

    Raises:
        ValueError: odd image size (yuv420p needs even width and height) or wrong shape.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"{path}: H.264 yuv420p needs even image sizes, got {W}x{H}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": str(crf)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    os.replace(tmp, path)
    return path
