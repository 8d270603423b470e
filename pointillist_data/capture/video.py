"""Per-camera video IO (mp4) through PyAV, streamed: one frame in memory at a time.

:func:`iter_video` decodes frames one by one (optionally a subset, optionally resized by
swscale straight from the decoder's YUV planes, so a 2200 x 3208 frame is never held as
RGB when a smaller size is asked for); :func:`read_video` stacks them for small clips;
:class:`VideoWriter` encodes frames as they come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from ..fileio import temp_name

__all__ = ["read_video", "iter_video", "write_video", "video_info", "VideoWriter"]


def video_info(path: str | Path) -> tuple[int, int, int]:
    """``(num_frames, height, width)`` of a video; frames are counted from the container's
    index, or by demuxing packets (never decoding) when the container does not say."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = int(s.frames or 0)
        if n == 0:
            n = sum(1 for p in c.demux(s) if p.size)
        return n, int(s.codec_context.height), int(s.codec_context.width)


def iter_video(path: str | Path, frames: Iterable[int] | None = None,
               size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode frames one at a time.

    Args:
        path: the video file.
        frames: increasing frame indices to yield (default: all); decoding stops after the last.
        size: ``(width, height)`` to resize to (area filter), or ``None`` for the video's size.

    Yields:
        ``(index, frame)`` with ``frame`` ``(H, W, 3)`` uint8 RGB.

    Raises:
        FileNotFoundError: no such video; ValueError: indices not increasing, or beyond the video.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    wanted = None if frames is None else list(frames)
    if wanted is not None and any(b <= a for a, b in zip(wanted, wanted[1:], strict=False)):
        raise ValueError(f"{path}: frame indices must be strictly increasing")
    if wanted is not None and not wanted:
        return
    fmt = "rgb24"
    k = n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, fr in enumerate(c.decode(s)):
            n = i + 1
            if wanted is not None and i != wanted[k]:
                continue
            if size is not None and (fr.width, fr.height) != tuple(size):
                fr = fr.reformat(width=int(size[0]), height=int(size[1]), format=fmt, interpolation="AREA")
            yield i, fr.to_ndarray(format=fmt)
            if wanted is not None:
                k += 1
                if k == len(wanted):
                    return
    if wanted is not None and k < len(wanted):
        raise ValueError(f"{path}: frame {wanted[k]} requested but the video has only {n} frames")


def read_video(path: str | Path, frames: list[int] | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode frames ``(T, H, W, 3)`` uint8 RGB (all, or the listed increasing indices) into
    one array; for long or large videos iterate :func:`iter_video` instead."""
    out = [f for _, f in iter_video(path, frames, size)]
    if not out:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(out)


class VideoWriter:
    """Encode frames one at a time as H.264 (yuv420p), written atomically on :meth:`close`.

    Args:
        path: the mp4 to write; fps, crf: frame rate and quality (0 = lossless, 8 = near).
        preset: x264 speed preset (``ultrafast`` ... ``veryslow``; default ``medium``).

    Raises:
        ValueError: odd frame sizes (yuv420p needs even ones), a frame of another size or type.
    """

    def __init__(self, path: str | Path, fps: int = 25, crf: int = 8, preset: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(temp_name(self.path.name, ".mp4"))
        self.fps, self.crf, self.preset = fps, crf, preset
        self._out = None
        self._stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: expected (H, W, 3) uint8 frames, got {frame.shape} {frame.dtype}")
        H, W = frame.shape[:2]
        if self._out is None:
            if H % 2 or W % 2:
                raise ValueError(f"{self.path}: H.264 yuv420p needs even image sizes, got {W}x{H}")
            self._out = av.open(str(self.tmp), "w")
            self._stream = self._out.add_stream("libx264", rate=self.fps)
            self._stream.width, self._stream.height, self._stream.pix_fmt = W, H, "yuv420p"
            self._stream.options = {"crf": str(self.crf), **({"preset": self.preset} if self.preset else {})}
        elif (W, H) != (self._stream.width, self._stream.height):
            raise ValueError(f"{self.path}: frame {self.count} is {W}x{H}, the video {self._stream.width}x"
                             f"{self._stream.height}")
        for p in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._out.mux(p)
        self.count += 1

    def close(self) -> Path:
        """Flush, close and rename into place; returns the path."""
        if self._out is None:
            raise ValueError(f"{self.path}: no frames written")
        for p in self._stream.encode():
            self._out.mux(p)
        self._out.close()
        self._out = None
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 25, crf: int = 8) -> Path:
    """Encode ``(H, W, 3)`` uint8 frames (an array ``(T, H, W, 3)`` or any iterable) as H.264
    (yuv420p, even sizes) atomically.

    Raises:
        ValueError: odd image size (yuv420p needs even width and height) or wrong shape.
    """
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8):
        raise ValueError(f"{path}: expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    with VideoWriter(path, fps, crf) as w:
        for f in frames:
            w.write(f)
    return Path(path)
