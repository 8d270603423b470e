"""``pointillist track --video`` at 720p, 1080p and 4K: peak RSS and time per frame (issue 28).

One synthetic monocular clip (:func:`pointillist_data.capture.synthetic_video.make_synthetic_video`,
640 x 360, the head ~110 pixels wide) is upscaled to 1280 x 720, 1920 x 1080 and 3840 x 2160
(:func:`~pointillist_data.capture.synthetic_video.upscale_video`, lossless), so the face's
content is the same and only its pixel count changes; each is tracked by the command line in
a fresh interpreter with the clip's ground-truth landmarks (``--landmarks``: the figure is the
tracking's, not MediaPipe's) and small iteration counts. The tracker works on the
``face_crop_size`` (512) face crop, so peak memory and time per frame should not depend on
the resolution: target peak RSS at 4K within 1.2x of 720p, and <= 1.5 GB.

Environment: ``POINTILLIST_BENCH_TRACK_FRAMES`` (default 6), ``POINTILLIST_BENCH_TRACK_ITERS``
(``rigid,first,frame,global``, default ``30,60,15,3``), ``POINTILLIST_BENCH_DIR`` (keep files).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_scale import _env_ints, _measure

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}


def run() -> dict:
    from pointillist_data.capture.synthetic_video import make_synthetic_video, upscale_video
    from pointillist_data.flame import resolve_flame_asset

    frames = _env_ints("POINTILLIST_BENCH_TRACK_FRAMES", "6")[0]
    rigid, first, per_frame, glob = _env_ints("POINTILLIST_BENCH_TRACK_ITERS", "30,60,15,3")
    keep = os.environ.get("POINTILLIST_BENCH_DIR")
    root = Path(keep or tempfile.mkdtemp(prefix="pointillist-bench-track-video-"))
    cli = Path(sys.executable).parent / "pointillist"
    out: dict = {"frames": frames, "iters": {"rigid": rigid, "first_frame": first, "frame": per_frame, "global": glob},
                 "face_crop_size": 512, "load_average_at_start": round(os.getloadavg()[0], 1)}
    try:
        t0 = time.perf_counter()
        clip = make_synthetic_video(root / "clip", resolve_flame_asset(), frames=frames, size=(640, 360))
        cfg = root / "track.json"
        cfg.write_text(json.dumps({"rigid_iters": rigid, "first_frame_iters": first, "frame_iters": per_frame,
                                   "global_iters": glob, "render_cameras": 1, "checkpoint_every": 0}))
        videos = {k: upscale_video(clip.video, root / f"clip_{k}.mp4", s) for k, s in SIZES.items()}
        out["clip_make_s"] = round(time.perf_counter() - t0, 1)
        startup = min(_measure([sys.executable, "-c", "import pipelines.cli, pointillist_data.tracking.monocular, "
                                "torch"])["wall_s"] for _ in range(2))
        out["startup_s"] = startup
        for k, video in videos.items():
            dst = root / f"track_{k}"
            shutil.rmtree(dst, ignore_errors=True)
            r = _measure([cli, "track", "--video", video, "--landmarks", clip.landmarks, "--config", cfg,
                          "--device", "cpu", "--out", dst])
            rec = json.loads((dst / "tracking_record.json").read_text())
            r["s_per_frame"] = round((r["wall_s"] - startup) / frames, 2)
            r["landmark_error_iod_pct"] = round(rec["metrics"]["landmark_error_iod_pct"], 3)
            r["face_crop_side_px"] = rec["face_crop"]["side"]
            r["caches_left"] = len(list(dst.glob(".frames-*")))
            out[k] = r
        rss = [out[k]["peak_rss_mb"] for k in SIZES]
        spf = [out[k]["s_per_frame"] for k in SIZES]
        out["rss_max_over_min"] = round(max(rss) / min(rss), 3)
        out["s_per_frame_max_over_min"] = round(max(spf) / min(spf), 3)
        out["load_average_at_end"] = round(os.getloadavg()[0], 1)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
