"""Issue 29 items 3 and 4, data side: every data stage writes a picture beside its outputs
(landmark grid with the frames without a face marked, canonical cloud by binding region,
token histograms, labelled fitting tiles), statistics pictures print the values below five
samples, ``run`` prints the flagged frames, and progress lines carry the loss and an ETA.

The stages run on the synthetic capture (ground-truth landmarks from files, one frame of one
camera blanked: fault injection with a known answer)."""

from __future__ import annotations

import io
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines.stages import canonicalize_stage, fit_stage, landmarks_stage, tokenize_stage, track_stage
from pointillist_data.capture.landmarks_io import read_normalized_landmarks, write_landmarks
from pointillist_data.capture.selection import CaptureSelection
from pointillist_data.fitting.config import FittingConfig
from pointillist_data.pictures import FEW_SAMPLES, REGION_COLOURS, hist_or_values
from pointillist_data.progress import LogProgress, Task
from pointillist_data.tracking.config import TrackingConfig

CAMERAS = ["220700191", "222200036", "222200037", "222200038", "222200039", "222200040"]
TINY_TRACK = {"first_frame_iters": 30, "frame_iters": 10, "global_iters": 3, "render_cameras": 1}


def _picture(path, min_w=300, min_h=150) -> np.ndarray:
    """The picture's pixels after checking it is a real, non-blank image of a useful size."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    assert img.shape[1] >= min_w and img.shape[0] >= min_h, img.shape
    assert img.reshape(-1, 3).var(0).sum() > 300, "blank picture"
    return img


def _colour_pixels(img: np.ndarray, rgb, tol: int = 0) -> int:
    return int((np.abs(img - np.asarray(rgb)).max(-1) <= tol).sum())


@pytest.fixture(scope="module")
def staged(synthetic_capture, demo_asset, tmp_path_factory):
    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    tmp = tmp_path_factory.mktemp("stages")
    src = tmp / "lmk_src"
    shutil.copytree(root / f"{pid:03d}/ground_truth/{cfg.sequence}/landmark2d/GT", src)
    blank = sorted(p.stem for p in src.glob("*.npz"))[0]
    lm = read_normalized_landmarks(src / f"{blank}.npz")
    lm[1] = 0  # frame 1 of this camera: no face (written as VHAP writes it)
    write_landmarks(src / f"{blank}.npz", lm, 1, 1)
    sel = CaptureSelection(cameras=CAMERAS)  # the held-out camera 222200037 and five more: a quick run
    lmk = landmarks_stage(root, pid, tmp / "landmarks", sel, f"files:{src}")
    lines: list[str] = []
    prog = LogProgress(lines.append, interval=0)
    track = track_stage(root, pid, tmp / "landmarks", tmp / "track", demo_asset, TrackingConfig(**TINY_TRACK), sel,
                        progress=prog)
    fit = fit_stage(tmp / "track", tmp / "fit", demo_asset, FittingConfig(iterations=8, log_every=1000),
                    progress=prog)
    canon = canonicalize_stage(tmp / "fit", tmp / "canonical" / "canonical.npz", demo_asset)
    tok = tokenize_stage(tmp / "canonical" / "canonical.npz", f"{pid:03d}", np.zeros((32, 32, 3), np.uint8),
                         tmp / "tokenize" / "sample.npz", demo_asset.num_faces)
    return {"tmp": tmp, "cfg": cfg, "blank": blank, "landmarks": lmk, "track": track, "fit": fit, "canon": canon,
            "tok": tok, "lines": lines}


def test_landmark_grid_marks_the_frame_without_a_face(staged):
    lmk, cfg = staged["landmarks"], staged["cfg"]
    assert lmk["camera_frames"] == len(CAMERAS) * cfg.timesteps and lmk["no_face_frames"] == 1
    assert len(lmk["no_face"]) == 1 and f"cam_{staged['blank']}" in lmk["no_face"][0]
    img = _picture(staged["tmp"] / "landmarks" / cfg.sequence / "landmarks.png", 400, 250)
    # the one flagged cell: a 4-pixel red border and cross around one thumbnail (about 2 * (h + w) * 4
    # plus the cross), none elsewhere; the detected points: green dots on the 47 others
    red = _colour_pixels(img, (255, 0, 0))
    assert 1000 < red < 3000, red
    assert _colour_pixels(img, (0, 255, 0)) > (len(CAMERAS) * 3 - 1) * 30


def test_run_prints_each_participants_flagged_frames(staged, tmp_path):
    from rich.console import Console

    from pipelines.monitor import RunMonitor
    from pipelines.workspace import Workspace

    ws = Workspace(str(tmp_path))
    ws.write_record(900, "landmarks", {"stage": "landmarks", "status": "complete", "metrics": staged["landmarks"]})
    ws.write_record(900, "track", {"stage": "track", "status": "complete",
                                   "metrics": {"flagged": [{"timestep": "00001", "reason": "face found in 2 camera(s)"}]}})
    buf = io.StringIO()
    with RunMonitor(str(tmp_path), ["900"], Console(file=buf, width=300, force_terminal=False)):
        pass
    out = [line for line in buf.getvalue().splitlines() if line.startswith("flagged:")]
    assert out[0] == f"flagged: participant 900: landmarks: no face in 1 of {len(CAMERAS) * 3} camera-frame(s)"
    assert f"cam_{staged['blank']}.mp4: no face in 1 of 3 frame(s): 1" in out[1]
    assert out[2] == "flagged: participant 900: tracking: face found in 2 camera(s) (timestep 00001)"
    assert len(out) == 3


def test_fitting_tiles_name_camera_timestep_and_psnr(staged):
    fit = staged["fit"]
    tiles = fit["heldout_tiles"]
    assert tiles and all(t["camera"] and t["timestep"] for t in tiles)
    img = _picture(staged["tmp"] / "fit" / "heldout.png", 100, 100)
    assert _colour_pixels(img, (255, 255, 0), 60) > 40 * len(tiles) * 2  # the yellow labels, on every tile
    # each stated PSNR against the PSNR of the picture's own tiles (below their label boxes)
    n = len(tiles)
    h = (img.shape[0] - 6) // 2
    w = (img.shape[1] - 2 - 2 * n) // n
    for k, t in enumerate(tiles):
        x = 2 + k * (w + 2)
        gt = img[2 + 30: 2 + h, x: x + w] / 255.0  # below the two label lines
        pred = img[2 + h + 2 + 30: 2 + 2 * h + 2, x: x + w] / 255.0
        got = 10 * math.log10(1.0 / max(float(((gt - pred) ** 2).mean()), 1e-12))
        assert abs(got - t["psnr_db"]) < 1.5, (got, t)


def test_fit_progress_shows_the_loss_from_the_first_step_and_an_eta(staged):
    fit_lines = [x for x in staged["lines"] if "] fitting:" in x]
    first = next(x for x in fit_lines if " 1/8 " in x)
    assert "loss " in first and "ETA " in first and "PSNR" in first, first
    glob = [x for x in staged["lines"] if "tracking: global pass" in x and "/3 (" in x and " 0/3 " not in x]
    assert glob and all("loss" in x for x in glob) and any("ETA" in x for x in glob), glob


def test_canonical_picture_colours_points_by_binding_region(staged):
    img = _picture(staged["tmp"] / "canonical" / "canonical.png", 500, 300)
    present = [name for name, hexc in REGION_COLOURS.items()
               if _colour_pixels(img, tuple(int(hexc[i: i + 2], 16) for i in (1, 3, 5)), 2) > 20]
    assert {"skin", "hair", "neck"} <= set(present), present


def test_token_histograms(staged):
    img = _picture(staged["tmp"] / "tokenize" / "sample_tokens.png", 800, 200)
    assert _colour_pixels(img, (31, 119, 180), 3) > 2000  # matplotlib's bars, in all four panels
    assert staged["tok"]["tokens"] == 4 * staged["canon"]["points"] + 8


def test_statistics_panels_print_values_below_five_samples_and_never_widen_the_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointillist_data.store.card import value_range

    fig, ax = plt.subplots(1, 2)
    hist_or_values(ax[0], [0.96], "ssim", labels=["017"])
    assert not ax[0].patches and "017: 0.96" in ax[0].texts[0].get_text()
    hist_or_values(ax[1], [0.96] * FEW_SAMPLES, "ssim")
    lo, hi = ax[1].patches[0].get_x(), ax[1].patches[-1].get_x() + ax[1].patches[-1].get_width()
    assert 0.95 < lo and hi < 0.97, (lo, hi)  # matplotlib alone: 0.46 .. 1.46
    plt.close(fig)
    lo, hi = value_range(np.full(6, 0.96))
    assert lo == 0.96 and hi - lo < 1e-5


def test_inspect_prints_points_per_subject_for_one_sample(tmp_path, monkeypatch):
    from store_samples import SMALL, make_sample

    import pointillist_data.store.inspect as inspect
    from pointillist_data.store.token_store import TokenStore
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter

    TokenStoreWriter.create(tmp_path / "s.zarr", StoreConfig(**SMALL)).append([make_sample(0, 300)])
    figs = []
    monkeypatch.setattr(inspect.plt, "close", figs.append)
    inspect.plot_store(TokenStore.open(tmp_path / "s.zarr"), tmp_path / "p.png")
    ax = figs[0].axes[2]
    assert not ax.patches and "000: 300" in ax.texts[0].get_text()  # before: one bar over 299.5 .. 300.5
    _picture(tmp_path / "p.png", 800, 200)


def test_log_progress_eta_at_the_mean_rate(monkeypatch):
    import pointillist_data.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    lines: list[str] = []
    p = LogProgress(lines.append, interval=0)
    with p.task("work", total=10) as t:
        now[0] = 110.0  # 2 steps in 10 s: 8 left at 5 s each
        t.advance(2, info="loss 0.5")
        now[0] = 290.0  # 6 steps in 190 s: 4 left, 126.7 s
        t.advance(4)
    assert lines[1] == "[   10.0 s] work: 2/10 (20 %), ETA 40 s  loss 0.5"
    assert "6/10 (60 %), ETA 2 min 07 s" in lines[2]
    assert "ETA" not in lines[-1] and "done 6/10" in lines[-1]
    assert progress.eta_seconds(Task(p, "x", None)) is None


def test_report_shows_every_stage_picture(staged, tmp_path):
    from pipelines.report import write_report
    from pipelines.workspace import Workspace

    ws = Workspace(str(tmp_path))
    metrics = {"landmarks": {"cameras": 6}, "track": {"landmark_error_px_mean": 1.0},
               "fit": {"psnr_heldout_db": 20.0, "gaussians": 10}, "canonicalize": {}, "tokenize": {"tokens": 48}}
    for stage, folder in (("landmarks", "landmarks"), ("track", "track"), ("fit", "fit"),
                          ("canonicalize", "canonical"), ("tokenize", "tokenize")):
        dst = ws.stage_dir(900, stage, "k")
        shutil.copytree(staged["tmp"] / folder, dst, ignore=shutil.ignore_patterns("export", "checkpoint"))
        ws.write_record(900, stage, {"stage": stage, "status": "complete", "output_dir": dst, "metrics": metrics[stage]})
    summary = {"summaries": [{"participant": "900", "status": "complete"}], "failed": [], "shard": {}, "wall_s": 1.0}
    text = open(write_report(str(tmp_path), summary)).read()
    want = [f"900_landmarks_{staged['cfg'].sequence}.png", "900_track.png", "900_fit.png", "900_canonicalize.png",
            "900_tokenize.png"]
    for name in want:
        assert f"](report/{name})" in text, name
        _picture(tmp_path / "report" / name, 100, 100)
