"""Per-camera video IO (mp4) through PyAV, streamed: one frame in memory at a time.

:func:`iter_video` decodes frames one by one (optionally a subset, optionally resized by
swscale straight from the decoder's YUV planes, so a 2200 x 3208 frame is never held as
RGB when a smaller size is asked for); :func:`read_video` stacks them for small clips;
:class:`VideoWriter` encodes frames as they come. Decoded with PyAV directly (the same
rgb24 conversion imageio's pyav plugin uses, without its forced garbage collection on every
close, which costs ~0.4 s once torch is loaded). A file that cannot be decoded raises
:class:`VideoError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from ..errors import PointillistError
from ..fileio import temp_name

__all__ = ["read_video", "iter_video", "write_video", "video_info", "VideoWriter", "VideoError"]


class VideoError(PointillistError, ValueError):
    """A video cannot be decoded (garbage, truncated, no frames, a frame past its end); the
    message names the file."""


def _unreadable(path: Path, e: BaseException) -> VideoError:
    while (e.__cause__ or e.__context__) is not None:  # FFmpeg's own words are at the bottom
        e = e.__cause__ or e.__context__
    reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    return VideoError(f"{path}: not a readable video, truncated or damaged ({reason})")


def video_info(path: str | Path) -> tuple[int, int, int]:
    """``(num_frames, height, width)`` of a video without decoding pixels: frames are counted
    from the container's index, or by demuxing packets when the container does not say.

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
            n, h, w = int(s.frames or 0), int(s.codec_context.height), int(s.codec_context.width)
            if n == 0:
                n = sum(1 for p in c.demux(s) if p.size)
    except VideoError:
        raise
    except Exception as e:  # PyAV's errors name the file only as given, with FFmpeg's reason
        raise _unreadable(path, e) from None
    if n < 1 or h < 1 or w < 1:
        raise VideoError(f"{path}: video has no frames ({n} x {h} x {w})")
    return n, h, w


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
        FileNotFoundError: no such video; ValueError: indices not increasing; VideoError: it
        cannot be decoded, a listed frame is past its end, or (reading all frames) fewer
        frames decode than its container announces (truncated).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video not found")
    wanted = None if frames is None else [int(i) for i in frames]
    if wanted is not None and any(b <= a for a, b in zip(wanted, wanted[1:], strict=False)):
        raise ValueError(f"{path}: frame indices must be strictly increasing")
    if wanted is not None and not wanted:
        return
    fmt = "rgb24"
    k = n = announced = 0
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: holds no video stream")
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            announced = int(s.frames or 0)
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
    except VideoError:
        raise
    except Exception as e:
        raise _unreadable(path, e) from None
    if wanted is not None:
        raise VideoError(f"{path}: frame(s) {wanted[k:]} not in the video ({n} frames decode)")
    if n == 0 or (announced and n != announced):
        raise VideoError(f"{path}: {n} of {announced} frames decode (truncated or damaged)")


def read_video(path: str | Path, frames: list[int] | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode frames ``(T, H, W, 3)`` uint8 RGB (all, or the listed indices, in that order)
    into one array; for long or large videos iterate :func:`iter_video` instead.

    Raises:
        FileNotFoundError, VideoError: as :func:`iter_video`.
    """
    if frames is None:
        return np.stack([f for _, f in iter_video(path, None, size)])
    order = sorted({int(i) for i in frames})
    got = dict(iter_video(path, order, size))
    if not got:
        raise VideoError(f"{path}: no frames asked for")
    return np.stack([got[int(i)] for i in frames])


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
        """Close and remove the temporary file (the target is left as it was)."""
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
