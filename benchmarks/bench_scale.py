"""Real NeRSemble scale: peak memory and speed of the stages at full resolution.

A capture at NeRSemble's full resolution (16 cameras x 2200 x 3208) is made by upscaling
the synthetic capture's videos (content need not be sharp), with ``FRAMES[-1]`` frames; the
landmark stage and the tracking stage's data loading (decoding every camera into the frame
cache) run at the default scale (1/4: 550 x 802) on the first ``n`` frames for each ``n`` in
``FRAMES``, each in a fresh process whose peak RSS is read from ``wait4``. Then
``pointillist track --video`` runs on a 1080p video of ``VIDEO_FRAMES`` frames (a small face
on a large frame, few iterations: the memory is the data's).

Targets: peak RSS at 120 frames at most 1.2x that at 30 frames, and under 4 GB; ``track
--video`` on 400 1080p frames under 3 GB.

Heavy (tens of minutes on 2 cores, ~1 GB of disk): run it once on a quiet machine
(``python -m benchmarks.run --only bench_scale``). Sizes: ``POINTILLIST_BENCH_SCALE_FRAMES``
(default ``30,120``), ``POINTILLIST_BENCH_VIDEO_FRAMES`` (400), ``POINTILLIST_BENCH_CAMERAS``
(16), ``POINTILLIST_BENCH_DIR`` (scratch folder, default a temporary one, removed after).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FULL = (2200, 3208)


def _env_ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


# A forked child's ru_maxrss includes the pages it shared with its parent before exec, so
# the command is started by a small fresh interpreter, which reports its child's peak.
_WRAPPER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
out = p.stdout.read()
_, status, usage = os.wait4(p.pid, 0)
print(out[-3000:])
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall_s": time.perf_counter() - t0,
                  "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def _measure(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time and peak resident memory (``ru_maxrss`` of its process)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "PYTHONPATH": os.getcwd()}
    r = subprocess.run([sys.executable, "-c", _WRAPPER, *map(str, cmd)], env=env, capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    res = json.loads(lines[-1]) if lines else {"rc": r.returncode}
    if r.returncode or res["rc"]:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return {"wall_s": round(res["wall_s"], 1), "peak_rss_mb": round(res["peak_rss_mb"], 1)}


def small_capture(root: Path):
    """The synthetic capture at 1/10 scale (220 x 320), 8 timesteps: the source of the
    upscaled videos."""
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture
    from pointillist_data.flame import resolve_flame_asset

    # 0.0998 rather than 0.1: 2200 x 3208 x 0.1 rounds to an odd height, which H.264 refuses
    cfg = SyntheticCaptureConfig(identities=1, timesteps=8, scale=0.0998, seed=3)
    if not (root / "small" / "capture.json").exists():  # kept from an earlier run in POINTILLIST_BENCH_DIR
        make_synthetic_capture(root / "small", cfg, resolve_flame_asset())
    return root / "small", cfg


def make_full_resolution_capture(root: Path, src: Path, cfg, frames: int, cameras: int) -> int:
    """The synthetic capture ``src`` upscaled to 2200 x 3208, its timesteps played back and
    forth to ``frames`` frames, in ``root/full``; returns the participant id."""
    from pointillist_data.capture.nersemble import ASSETS, SERIALS
    from pointillist_data.capture.video import VideoWriter, read_video

    pid = cfg.participants[0]
    dst = root / "full"
    made = dst / "made.json"
    if made.exists() and json.loads(made.read_text()) == {"frames": frames, "cameras": cameras}:
        return pid
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / f"{pid:03d}" / "calibration", dst / f"{pid:03d}" / "calibration")
    back_and_forth = list(range(8)) + list(range(6, 0, -1))
    order = [back_and_forth[t % 14] for t in range(frames)]
    for serial in SERIALS[:cameras]:
        fmt = {"p_id": pid, "seq_name": cfg.sequence, "serial": serial}
        small = read_video(src / ASSETS["images"].format(**fmt))
        big = [np.asarray(Image.fromarray(f).resize(FULL, Image.BILINEAR)) for f in small]
        with VideoWriter(dst / ASSETS["images"].format(**fmt), crf=18, preset="ultrafast") as w:
            for t in order:
                w.write(big[t])
        bg = Image.open(src / ASSETS["backgrounds"].format(**fmt)).resize(FULL, Image.BILINEAR)
        (dst / ASSETS["backgrounds"].format(**fmt)).parent.mkdir(parents=True, exist_ok=True)
        bg.save(dst / ASSETS["backgrounds"].format(**fmt), quality=95)
    made.write_text(json.dumps({"frames": frames, "cameras": cameras}))
    return pid


def make_video(path: Path, src: Path, frames: int) -> Path:
    """A 1920 x 1080 video: the synthetic frontal camera's head (~250 pixels wide) moving
    across a grey frame."""
    from pointillist_data.capture.video import VideoWriter, read_video

    clip = read_video(next(src.rglob("cam_222200037.mp4")))
    clip = [np.asarray(Image.fromarray(f).resize((440, 640), Image.BILINEAR)) for f in clip]
    back_and_forth = list(range(8)) + list(range(6, 0, -1))
    with VideoWriter(path, crf=18, preset="ultrafast") as w:
        for t in range(frames):
            canvas = np.full((1080, 1920, 3), 100, np.uint8)
            x = 300 + int(900 * (0.5 + 0.5 * np.sin(t / 40)))
            canvas[300:940, x:x + 440] = clip[back_and_forth[t % 14]]
            w.write(canvas)
    return path


def _load(capture: str, pid: int, frames: str) -> None:
    """The tracking stage's data loading (``--measure load``): every camera decoded at 1/4
    into the frame cache; prints the wall time."""
    from pointillist_data.capture.selection import CaptureSelection
    from pointillist_data.tracking.stage import load_sequence

    t0 = time.perf_counter()
    lm = Path(capture) / "landmarks"
    data = load_sequence(capture, pid, "EXP-1-head", lm, selection=CaptureSelection(frames=frames),
                         cache=Path(capture) / "cache")
    print(json.dumps({"load_s": time.perf_counter() - t0, "shape": list(data.images.shape)}))
    data.close()


def run() -> dict:
    frame_counts = _env_ints("POINTILLIST_BENCH_SCALE_FRAMES", "30,120")
    video_frames = _env_ints("POINTILLIST_BENCH_VIDEO_FRAMES", "400")[0]
    cameras = _env_ints("POINTILLIST_BENCH_CAMERAS", "16")[0]
    keep = os.environ.get("POINTILLIST_BENCH_DIR")
    root = Path(keep or tempfile.mkdtemp(prefix="pointillist-bench-scale-"))
    cli = Path(sys.executable).parent / "pointillist"
    # the machine's load is recorded: on a shared machine the timings (not the memory) vary with it
    out: dict = {"cameras": cameras, "resolution": list(FULL), "scale": "1/4 (550x802)",
                 "load_average_at_start": round(os.getloadavg()[0], 1)}
    try:
        t0 = time.perf_counter()
        src, scfg = small_capture(root)
        pid = make_full_resolution_capture(root, src, scfg, max(frame_counts), cameras)
        out["capture_make_s"] = round(time.perf_counter() - t0, 1)
        cap = root / "full"
        # interpreter and import time, taken off the per-frame figures
        startup = min(_measure([sys.executable, "-c", "import pipelines.cli, pointillist_data.tracking.stage, "
                                "mediapipe, torch"])["wall_s"] for _ in range(2))
        out["startup_s"] = startup
        for n in frame_counts:
            lm_out = cap / "landmarks"
            shutil.rmtree(lm_out, ignore_errors=True)
            r = _measure([cli, "landmarks", "--capture", cap, "--participant", pid, "--out", lm_out,
                          "--frames", f"0:{n}"])
            r["s_per_camera_frame"] = round((r["wall_s"] - startup) / (n * cameras), 3)
            out[f"landmarks_{n}"] = r
            r = _measure([sys.executable, "-m", "benchmarks.bench_scale", "--measure", "load", str(cap), str(pid),
                          f"0:{n}"])
            r["s_per_camera_frame"] = round((r["wall_s"] - startup) / (n * cameras), 3)
            out[f"track_load_{n}"] = r
        lo, hi = min(frame_counts), max(frame_counts)
        for k in ("landmarks", "track_load"):
            out[f"{k}_rss_ratio_{hi}_vs_{lo}"] = round(out[f"{k}_{hi}"]["peak_rss_mb"] / out[f"{k}_{lo}"]["peak_rss_mb"], 3)
        video = make_video(root / "video_1080p.mp4", src, video_frames)
        cfg = root / "video_track.json"
        cfg.write_text(json.dumps({"first_frame_iters": 60, "frame_iters": 4, "global_iters": 4}))
        r = _measure([cli, "track", "--video", video, "--out", root / "video_track", "--config", cfg])
        r["frames"] = video_frames
        r["s_per_frame"] = round((r["wall_s"] - startup) / video_frames, 3)
        rec = json.loads((root / "video_track" / "tracking_record.json").read_text())
        r["frames_tracked"] = rec["metrics"]["frames_tracked"]
        out["track_video_1080p"] = r
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        _load(sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        print(json.dumps(run(), indent=1))
