"""Real-capture scale: the selection options, streamed decoding at a scale with K following,
memory that does not grow with the number of frames, several sequences per identity, and
temporary names unique per process."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointillist_data.capture.landmarks_io import load_landmarks
from pointillist_data.capture.nersemble import ASSETS, FULL_HEIGHT, FULL_WIDTH, SERIALS, NersembleSequence
from pointillist_data.capture.selection import CaptureSelection, match_sequences
from pointillist_data.capture.video import read_video, write_video
from pointillist_data.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- selection
def test_selection_parses_and_validates_each_option():
    s = CaptureSelection.from_options("1/4", "10:40:3", "0,222200037", "EMO-1,EXP-2")
    assert s.scale == 0.25 and s.cameras == ["0", "222200037"] and s.sequences == ["EMO-1", "EXP-2"]
    assert s.frame_indices(100) == list(range(10, 40, 3)) and s.frame_indices(20) == [10, 13, 16, 19]
    assert CaptureSelection(frames="5,1,5").frame_indices(6) == [1, 5]
    assert CaptureSelection(frames=":3").frame_indices(10) == [0, 1, 2]
    assert CaptureSelection().effective_scale(0.25) == 0.25 and CaptureSelection(scale=0.5).effective_scale(1) == 0.5
    assert s.camera_serials(SERIALS, "p") == [SERIALS[0], "222200037"]
    for kw, opt in ((dict(scale="2"), "--scale"), (dict(scale="abc"), "--scale"), (dict(frames="5:2"), "--frames"),
                    (dict(frames="a:b"), "--frames"), (dict(frames="0::0"), "--frames")):
        with pytest.raises(InputError, match=opt):
            CaptureSelection.from_options(**kw)
    with pytest.raises(InputError, match="--frames: frame"):
        CaptureSelection(frames="3,99").frame_indices(10)
    with pytest.raises(InputError, match="--cameras.*no camera '123456789'"):
        CaptureSelection(cameras=["123456789"]).camera_serials(SERIALS, "p")


def test_sequences_default_to_the_union_present_else_all():
    present = ["EMO-1-shout+laugh", "EXP-2-eyes", "EXP-1-head", "FREE", "SEN-01-cramp_small_danger"]
    assert match_sequences(None, present, "p") == ["EMO-1-shout+laugh", "EXP-2-eyes"]  # GaussianAvatars' union
    assert match_sequences(None, ["EXP-1-head", "FREE"], "p") == ["EXP-1-head", "FREE"]  # none of it: all present
    assert match_sequences(["FREE", "EMO-1"], present, "p") == ["FREE", "EMO-1-shout+laugh"]  # prefixes, order kept
    assert match_sequences(["all"], present, "p") == sorted(present)
    assert CaptureSelection.from_options(sequences="all").sequences == ["all"]  # not the default
    assert CaptureSelection.from_options(cameras="all").cameras is None
    with pytest.raises(InputError, match="no sequence matches 'EMO-3'.*present: EMO-1"):
        match_sequences(["EMO-3"], present, "p")
    with pytest.raises(InputError, match="matches several"):
        match_sequences(["EXP"], ["EXP-1", "EXP-2"], "p")


def test_every_stage_run_and_make_data_take_the_selection(synthetic_capture, tmp_path):
    """--scale/--frames/--cameras/--sequences on every stage command and on run; make data
    hands its variables to run; the landmark command keeps the selected cameras and frames."""
    import subprocess

    import typer
    from typer.testing import CliRunner

    from pipelines.cli import app

    commands = typer.main.get_command(app).commands
    for name in ("landmarks", "track", "fit", "tokenize", "run"):
        opts = {o for p in commands[name].params for o in p.opts}
        assert {"--scale", "--frames", "--cameras", "--sequences"} <= opts, name
    make = subprocess.run(["make", "-n", "data", "NERSEMBLE=/nersemble", "OUT=/o", "SEQUENCES=EMO-1,EXP-2",
                           "SCALE=1/4", "FRAMES=0:300:2", "CAMERAS=0,8"], cwd=ROOT, capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    run_line = next(x for x in make.stdout.splitlines() if " run --capture /nersemble" in x)
    assert "--sequences EMO-1,EXP-2 --scale 1/4 --frames 0:300:2 --cameras 0,8" in run_line
    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    gt = root / f"{pid:03d}/ground_truth/{cfg.sequence}/landmark2d/GT"
    r = CliRunner().invoke(app, ["landmarks", "--capture", str(root), "--participant", str(pid), "--out",
                                 str(tmp_path), "--detector", "files", "--from", str(gt), "--frames", "1:3",
                                 "--cameras", "0,5", "--scale", "1/40"])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in (tmp_path / cfg.sequence).iterdir())
    # the selected cameras' landmark files, and the stage's picture of them
    assert written == sorted([f"{SERIALS[i]}.npz" for i in (0, 5)] + ["landmarks.png"])
    for i in (0, 5):  # VHAP's normalised units hold at any scale: the selected rows, unchanged
        got = np.load(tmp_path / cfg.sequence / f"{SERIALS[i]}.npz")["face_landmark_2d"]
        np.testing.assert_allclose(got, np.load(gt / f"{SERIALS[i]}.npz")["face_landmark_2d"][1:3], rtol=1e-6)


# ---------------------------------------------------------------------------- streamed decoding
def test_scaled_frames_follow_k_and_stream_subsets(synthetic_capture):
    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    full = NersembleSequence(root, pid, cfg.sequence)
    half = NersembleSequence(root, pid, cfg.sequence, scale=cfg.scale / 2)  # 55 x 80 of the 110 x 160 videos
    s = SERIALS[8]
    W, H = round(FULL_WIDTH * cfg.scale / 2), round(FULL_HEIGHT * cfg.scale / 2)
    assert half.image_size == (W, H)
    np.testing.assert_allclose(half.cameras[s].K[0], full.cameras[s].K[0] * W / 110, atol=1e-9)
    np.testing.assert_allclose(half.cameras[s].K[1], full.cameras[s].K[1] * H / 160, atol=1e-9)
    # a scale asking for more pixels than the video holds reads the video as is (no upsampling)
    assert NersembleSequence(root, pid, cfg.sequence, scale=0.25).image_size == (110, 160)
    # a projected point lands on the same image content at both scales
    lmk = load_landmarks(root / f"{pid:03d}/ground_truth/{cfg.sequence}/landmark2d/GT/{s}.npz", 110, 160)[0, :, :2]
    big = full.frames(s, [0])[0].astype(float)
    small = half.frames(s, [0])[0]
    ref = np.asarray(Image.fromarray(big.astype(np.uint8)).resize((W, H), Image.BOX)).astype(float)
    assert np.abs(small - ref).mean() < 6  # swscale's area filter vs PIL's box filter
    uv = (lmk * [W / 110, H / 160]).astype(int)
    assert np.abs(small[uv[:, 1], uv[:, 0]].astype(float) - ref[uv[:, 1], uv[:, 0]]).mean() < 10
    # subsets decode the same pixels as the whole video; masks are uint8 alpha
    every = full.frames(s)
    np.testing.assert_array_equal(full.frames(s, [1, 2]), every[1:])
    m = full.masks(s, [2])
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255} and m.shape == (1, 160, 110)
    np.testing.assert_array_equal(m[0], full.masks(s)[2])


@pytest.fixture(scope="module")
def long_capture(synthetic_capture, tmp_path_factory):
    """Participant copy whose EXP-1-head videos have 48 frames (the 3 frames repeated) and
    whose second sequence EXP-2-eyes plays the first backwards (ground truth reversed)."""
    import shutil

    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    out = tmp_path_factory.mktemp("long")
    src = root / f"{pid:03d}"
    shutil.copytree(src / "calibration", out / f"{pid:03d}" / "calibration")
    shutil.copytree(src / "sequences" / "BACKGROUND", out / f"{pid:03d}" / "sequences" / "BACKGROUND")
    gt = src / "ground_truth" / cfg.sequence
    for s in SERIALS:
        v = read_video(root / ASSETS["images"].format(p_id=pid, seq_name=cfg.sequence, serial=s))
        write_video(out / ASSETS["images"].format(p_id=pid, seq_name="EXP-1-head", serial=s), np.concatenate([v] * 16))
        write_video(out / ASSETS["images"].format(p_id=pid, seq_name="EXP-2-eyes", serial=s), v[::-1])
        lm = np.load(gt / "landmark2d" / "GT" / f"{s}.npz")["face_landmark_2d"]
        for seq, rows in (("EXP-1-head", np.concatenate([lm] * 16)), ("EXP-2-eyes", lm[::-1])):
            d = out / "gt" / seq
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / f"{s}.npz", face_landmark_2d=rows)
    return out, pid


def _peak(fn) -> tuple[int, object]:
    tracemalloc.start()
    try:
        data = fn()
        return tracemalloc.get_traced_memory()[1], data
    finally:
        tracemalloc.stop()


def test_decoding_memory_does_not_grow_with_frames(long_capture, tmp_path):
    from pointillist_data.tracking.stage import load_sequence

    root, pid = long_capture
    sel = dict(cameras=["0", "1", "2", "3"])
    p3, d3 = _peak(lambda: load_sequence(root, pid, "EXP-1-head", root / "gt", selection=CaptureSelection(
        frames="0:3", **sel), cache=tmp_path))
    p48, d48 = _peak(lambda: load_sequence(root, pid, "EXP-1-head", root / "gt", selection=CaptureSelection(**sel),
                                           cache=tmp_path))
    frame = 110 * 160 * 3
    assert d48.images.shape == (48, 4, 160, 110, 3) and d3.images.shape[0] == 3
    # 45 more timesteps of 4 cameras are 9.5 MB of pixels; what grows is the landmarks
    # (4 x 68 x 3 floats per timestep), never the frames: < 10 % of a timestep's pixels each
    assert (p48 - p3) / 45 < 0.1 * 4 * frame, (p3, p48)
    seq = NersembleSequence(root, pid, "EXP-1-head")
    np.testing.assert_array_equal(d48.images[47, 2], seq.frames(SERIALS[2], [47])[0])  # read back lazily
    np.testing.assert_array_equal(d48.masks[47, 2], seq.masks(SERIALS[2], [47])[0])
    np.testing.assert_array_equal(d48.images[:3][1, 3], d3.images[1, 3])
    cache = d48.cache.path
    d48.close()
    d3.close()
    assert not cache.exists()


# ---------------------------------------------------------------------------- several sequences
def test_two_sequences_tracked_with_one_shape(long_capture, demo_asset, tmp_path):
    """EXP-2-eyes replays EXP-1-head backwards: tracked together, frame k of one sequence and
    frame 2 - k of the other are the same pose, under one identity shape and static offset."""
    from pointillist_data.capture import read_vhap_export
    from pointillist_data.fitting.data import load_export
    from pointillist_data.flame import FlameParams
    from pointillist_data.tracking.config import TrackingConfig
    from pointillist_data.tracking.stage import load_sequence, run_tracking, vertex_errors

    root, pid = long_capture
    data = load_sequence(root, pid, ["EXP-1-head", "EXP-2-eyes"], root / "gt",
                         selection=CaptureSelection(frames="0:3", cameras=[str(i) for i in range(4, 16)]))
    assert data.timestep_ids[:4] == ["EXP-1-head_00000", "EXP-1-head_00001", "EXP-1-head_00002", "EXP-2-eyes_00000"]
    # landmark terms only: the lazy frames' render terms are covered by the `tracked` fixture
    cfg = TrackingConfig(first_frame_iters=150, frame_iters=80, global_iters=30, render_cameras=0)
    rec = run_tracking(data, demo_asset, tmp_path, cfg)
    data.close()
    assert rec["sequences"] == ["EXP-1-head", "EXP-2-eyes"] and rec["metrics"]["frames_tracked"] == 6
    p = FlameParams.load(tmp_path / "tracked_flame_params_30.npz")  # VHAP's name: the global-pass iterations
    assert p.shape.shape == (300,) and p.static_offset.shape == (1, demo_asset.num_vertices, 3)
    fwd = FlameParams.concatenate([p.frame(t) for t in (0, 1, 2)])
    back = FlameParams.concatenate([p.frame(t) for t in (5, 4, 3)])
    err = vertex_errors(demo_asset, fwd, back)
    assert err.mean() < 1.5e-3, err.mean()  # one identity, the same poses recovered in both takes
    frames = read_vhap_export(tmp_path / "export")
    assert {f.timestep_id.rsplit("_", 1)[0] for f in frames} == {"EXP-1-head", "EXP-2-eyes"}
    fit = load_export(tmp_path / "export")
    assert fit.sequences == ["EXP-1-head", "EXP-2-eyes"] and fit.params.num_frames == 6  # the union
    only = load_export(tmp_path / "export", selection=CaptureSelection(sequences=["EXP-2"], cameras=["0"]))
    assert only.params.num_frames == 3 and len(only.images) == 3 and only.sequences == ["EXP-2-eyes"]
    assert only.images[1].shape == (160, 110, 3) and 0 <= float(only.images[1].min())


# ---------------------------------------------------------------------------- temporary names
def test_temporary_names_are_unique_per_process():
    from pointillist_data.fileio import temp_name

    a, b = temp_name("x.json"), temp_name("x.json")
    assert a != b and f".{__import__('os').getpid()}-" in a
    # every writer goes through fileio's helpers (or a uuid): no fixed temporary name anywhere
    fixed = re.compile(r"""["'][^"'\n]*\.tmp""")  # ".tmp" inside a string literal
    bad = []
    for pkg in ("pointillist_data", "pointillist_model", "pipelines"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f.name == "fileio.py":
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if fixed.search(line) and "uuid" not in line and "glob(" not in line:
                    bad.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
