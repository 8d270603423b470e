"""Per-camera video IO (mp4) through PyAV."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from ..errors import PointillistError

__all__ = ["read_video", "write_video", "video_info", "VideoError"]


class VideoError(PointillistError, ValueError):
    """A video cannot be decoded (garbage, truncated, no frames); the message names the file."""


def _unreadable(path: Path, e: BaseException) -> VideoError:
    while (e.__cause__ or e.__context__) is not None:  # FFmpeg's own words are at the bottom
        e = e.__cause__ or e.__context__
    reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    return VideoError(f"{path}: not a readable video, truncated or damaged ({reason})")


def video_info(path: str | Path) -> tuple[int, int, int]:
    """``(num_frames, height, width)`` of a video from its container, without decoding pixels.

    Raises:
        FileNotFoundError: no such file; VideoError: it cannot be opened, or has no frames.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: holds no video stream")
            s = c.streams.video[0]
            n, h, w = s.frames, s.codec_context.height, s.codec_context.width
    except VideoError:
        raise
    except Exception as e:  # PyAV's errors name the file only as given, with FFmpeg's reason
        raise _unreadable(path, e) from None
    if n < 1 or h < 1 or w < 1:
        raise VideoError(f"{path}: video has no frames ({n} x {h} x {w})")
    return int(n), int(h), int(w)


def read_video(path: str | Path, frames: list[int] | None = None) -> np.ndarray:
    """Decode frames ``(T, H, W, 3)`` uint8 RGB (all, or the listed indices, in that order).

    Decoded with PyAV directly (the same rgb24 conversion imageio's pyav plugin uses, without
    its forced garbage collection on every close, which costs ~0.4 s once torch is loaded).

    Raises:
        FileNotFoundError: no such file; VideoError: it cannot be decoded, a listed frame is
        past its end, or fewer frames decode than its container announces (truncated).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    wanted = None if frames is None else {int(i) for i in frames}
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: holds no video stream")
            announced = c.streams.video[0].frames
            for k, frame in enumerate(c.decode(video=0)):
                if wanted is None or k in wanted:
                    got[k] = frame.to_ndarray(format="rgb24")
                if wanted is not None and len(got) == len(wanted):
                    break
    except VideoError:
        raise
    except Exception as e:
        raise _unreadable(path, e) from None
    if wanted is None:
        if not got or (announced and len(got) != announced):
            raise VideoError(f"{path}: {len(got)} of {announced} frames decode (truncated or damaged)")
        return np.stack([got[k] for k in sorted(got)])
    missing = sorted(wanted - set(got))
    if missing:
        raise VideoError(f"{path}: frame(s) {missing} not in the video")
    return np.stack([got[int(i)] for i in frames])


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
