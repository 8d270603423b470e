"""Bad input is caught early and named: checks before a run, content hashes of inputs,
damaged videos and calibrations, and `status` telling killed stages and the store apart."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY
from store_samples import SMALL, make_sample

from pipelines.runner import check_run, run_participant, run_pipeline
from pipelines.stages import PipelineConfig
from pointillist_data.capture import Camera, CameraError, NersembleError, NersembleSequence, VideoError
from pointillist_data.capture.nersemble import SERIALS
from pointillist_data.capture.video import read_video, video_info, write_video
from pointillist_data.errors import ConfigError, InputError, PointillistError
from pointillist_data.store.write import StoreConfig, TokenStoreWriter
from pointillist_data.tokens import Vocabulary

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


@pytest.fixture
def one_participant(tiny_capture, tmp_path):
    """A private copy of one participant of the tiny capture (tests change its files)."""
    root, cfg = tiny_capture
    pid = cfg.participants[0]
    capture = tmp_path / "capture"
    shutil.copytree(root / f"{pid:03d}", capture / f"{pid:03d}")  # copy2: old mtimes, as real data has
    return capture, pid


def test_bad_options_fail_before_any_stage(one_participant, tmp_path):
    capture, pid = one_participant
    cfg = lambda **kw: PipelineConfig(**{"capture": str(capture), "participants": [pid], "landmarks": GT,  # noqa: E731
                                         "out": str(tmp_path / "run"), **TINY, **kw})
    (tmp_path / "file").write_text("not a store")
    cases = [
        (cfg(store=str(tmp_path / "file")), r"--store .*file: is a file, not a store folder"),
        (cfg(out=str(tmp_path / "file" / "run")), r"--out .*file/run: cannot write there"),
        (cfg(capture=str(tmp_path / "nowhere")), r"--capture .*nowhere: not a folder"),
    ]
    for c, message in cases:
        with pytest.raises(PointillistError) as e:
            run_pipeline(c, workers=1)
        # an unwritable --out also leaves no place for the store under it: both are listed
        assert re.search(message, "\n".join([str(e.value), *getattr(e.value, "problems", [])])), e.value
    # a stage setting is refused when the PipelineConfig is made (once, not in every worker)
    with pytest.raises(ConfigError, match=r"'tracking': unknown field\(s\) 'frame_iter' .*did you mean 'frame_iters'"):
        cfg(tracking={**TINY["tracking"], "frame_iter": 3})
    with pytest.raises(ConfigError, match=r"'fitting': .*iterations"):
        cfg(fitting={"iterations": -1})
    assert not (tmp_path / "run" / "work").exists()  # nothing ran
    check_run(cfg(), until="landmarks")  # a store is not needed when the run stops before sharding
    # the command line prints the one line, exit code 2
    from typer.testing import CliRunner

    from pipelines.cli import app

    r = CliRunner().invoke(app, ["run", "--capture", str(capture), "--out", str(tmp_path / "run"), "--participants",
                                 str(pid), "--landmarks", GT, "--store", str(tmp_path / "file")])
    assert r.exit_code == 2 and "error: --store" in r.output and "Traceback" not in r.output, r.output
    # a store built for another FLAME model (vocabulary) is refused too
    TokenStoreWriter.create(tmp_path / "other.zarr", StoreConfig(vocab=Vocabulary(num_faces=9976), **SMALL))
    with pytest.raises(InputError, match="vocabulary"):
        check_run(cfg(store=str(tmp_path / "other.zarr")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_read_only_out_is_named(one_participant, tmp_path):
    capture, pid = one_participant
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    with pytest.raises(InputError, match="--out .*ro: cannot write there"):
        run_pipeline(PipelineConfig(capture=str(capture), out=str(out), participants=[pid], landmarks=GT), workers=1)


def test_inputs_are_hashed_by_content_and_cached(one_participant, tmp_path, monkeypatch):
    capture, pid = one_participant
    pc = PipelineConfig(capture=str(capture), out=str(tmp_path / "run"), participants=[pid], landmarks=GT, **TINY)
    assert run_participant(pc.to_dict(), pid, until="landmarks")["stages"] == {"landmarks": "complete"}
    import pointillist_data.manifests as manifests

    reads = []
    monkeypatch.setattr(manifests, "file_sha256", lambda p, f=manifests.file_sha256: reads.append(p) or f(p))
    assert run_participant(pc.to_dict(), pid, until="landmarks")["stages"] == {"landmarks": "skipped (complete)"}
    assert reads == []  # nothing changed, nothing re-read
    video = sorted((capture / f"{pid:03d}" / "sequences").rglob("cam_*.mp4"))[3]
    size = video.stat().st_size
    data = bytearray(video.read_bytes())
    data[size // 2: size // 2 + 64] = bytes(64)  # same size, other content
    video.write_bytes(bytes(data))
    assert video.stat().st_size == size
    s = run_participant(pc.to_dict(), pid, until="landmarks")
    assert s["stages"] in ({"landmarks": "complete"}, {"landmarks": "failed"}), s  # re-run, never skipped
    assert [str(p) for p in reads] == [str(video)]  # only the changed file was read again
    video.write_bytes(np.random.default_rng(0).bytes(size))  # garbage: the error names the file
    s = run_participant(pc.to_dict(), pid, until="landmarks")
    assert s["status"] == "failed" and str(video) in s["error"] and "VideoError" in s["error"], s
    # an --out that turns unwritable while running: a failed summary naming it, not a lost worker
    (tmp_path / "f").write_text("")
    bad = run_participant({**pc.to_dict(), "out": str(tmp_path / "f" / "run")}, pid, until="landmarks")
    assert bad["status"] == "failed" and str(tmp_path / "f") in bad["error"], bad


def test_damaged_videos_and_calibrations_are_named(one_participant, tmp_path):
    capture, pid = one_participant
    good = write_video(tmp_path / "v.mp4", np.random.default_rng(0).integers(0, 255, (3, 32, 24, 3), dtype=np.uint8))
    assert video_info(good) == (3, 32, 24)
    data = good.read_bytes()
    for name, content in (("truncated", data[: len(data) // 2]), ("garbage", np.random.default_rng(1).bytes(len(data))),
                          ("empty", b"")):
        p = tmp_path / f"{name}.mp4"
        p.write_bytes(content)
        for read in (video_info, read_video):
            with pytest.raises(VideoError, match=f"{p}: "):
                read(p)
    w2c = np.eye(4)
    w2c[3, 2] = 0.1
    with pytest.raises(CameraError, match="bottom row"):
        Camera(w2c, np.array([[100.0, 0, 50], [0, 100, 50], [0, 0, 1]]), 100, 100, "cam0")
    calib = capture / f"{pid:03d}" / "calibration" / "camera_params.json"
    c = json.loads(calib.read_text())
    serial = sorted(c["world_2_cam"])[5]
    c["world_2_cam"][serial][3] = [0.0, 0.0, 0.0, 2.0]
    calib.write_text(json.dumps(c))
    with pytest.raises(NersembleError, match=f"participant {pid:03d}.*{serial}.*bottom row"):
        NersembleSequence(capture, pid, "EXP-1-head")


def test_status_tells_killed_from_running_and_shows_the_store(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.runner import _process_started
    from pipelines.stages import STAGES
    from pipelines.workspace import Workspace

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ws = Workspace(str(tmp_path / "run"))
    me = {"host": socket.gethostname()}
    base = {"participant": "", "inputs": {}, "config_hash": "", "outputs": {}}
    for stage in STAGES:  # participant 018: every stage done
        ws.write_record(18, stage, {**base, "stage": stage, "status": "complete"})
    ws.write_record(17, "landmarks", {**base, "stage": "landmarks", "status": "complete"})
    ws.write_record(17, "track", {**base, "stage": "track", "status": "running", "worker_pid": dead.pid,
                                  "worker_started": 0.0, **me})
    ws.write_record(19, "landmarks", {**base, "stage": "landmarks", "status": "running", "worker_pid": os.getpid(),
                                      "worker_started": _process_started(os.getpid()), **me})
    monkeypatch.setenv("COLUMNS", "250")
    out = CliRunner().invoke(app, ["status", str(tmp_path / "run")]).output
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    # the cell says interrupted; the reason follows the table whole (tests/test_tables.py)
    assert f"017 track: interrupted: worker process {dead.pid} is gone" in out and "interrupted" in rows["017"], out
    assert "running" in rows["019"] and "interrupted" not in rows["019"], out
    assert rows["018"].count("done") == len(STAGES) and rows["018"].rstrip("│ ").endswith("no"), out
    assert "store.zarr: absent" in out
    # every stage done, but the store holds no sample of 018 yet: the table says so
    TokenStoreWriter.create(tmp_path / "run" / "store.zarr", StoreConfig(**SMALL))
    out = CliRunner().invoke(app, ["status", str(tmp_path / "run")]).output
    assert "store.zarr: 0 samples" in out and [ln for ln in out.splitlines() if "018" in ln][0].rstrip("│ ").endswith("no")
    TokenStoreWriter.open(tmp_path / "run" / "store.zarr").append([make_sample(18, 20)])
    out = CliRunner().invoke(app, ["status", str(tmp_path / "run")]).output
    assert "store.zarr: 1 sample" in out and "store.zarr: 1 samples" not in out
    assert [ln for ln in out.splitlines() if "018" in ln][0].rstrip("│ ").endswith("yes")


def test_every_capture_problem_is_listed_before_any_worker_starts(one_participant, tiny_capture, tmp_path,
                                                                   monkeypatch):
    """A participant not in the capture, a missing calibration, a damaged calibration and
    every unreadable video of the selection: all named in one error, exit 2, before dask."""
    import time

    import dask.distributed
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pointillist_data.errors import InputProblems

    capture, pid = one_participant
    root, cfg0 = tiny_capture
    other = cfg0.participants[1]
    shutil.copytree(root / f"{other:03d}", capture / f"{other:03d}")
    (capture / f"{other:03d}" / "calibration" / "camera_params.json").unlink()
    videos = sorted((capture / f"{pid:03d}" / "sequences").rglob("images/cam_*.mp4"))
    damaged = videos[1:4]
    for v, content in zip(damaged, (b"", np.random.default_rng(2).bytes(5000), videos[0].read_bytes()[:300]),
                          strict=True):
        v.write_bytes(content)  # empty, garbage, truncated
    calib = capture / f"{pid:03d}" / "calibration" / "camera_params.json"
    c = json.loads(calib.read_text())
    serial = sorted(c["world_2_cam"])[5]
    c["world_2_cam"][serial][3] = [0.0, 0.0, 0.0, 2.0]
    calib.write_text(json.dumps(c))
    started = []
    monkeypatch.setattr(dask.distributed, "LocalCluster", lambda *a, **k: started.append(1))
    pc = PipelineConfig(capture=str(capture), participants=[pid, other, 999], landmarks=GT,
                        out=str(tmp_path / "run"), **TINY)
    t0 = time.perf_counter()
    with pytest.raises(InputProblems) as e:
        run_pipeline(pc, workers=1)
    took = time.perf_counter() - t0
    assert not started and not (tmp_path / "run" / "work").exists()  # nothing ran
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 6, text
    assert "participant 999: no folder" in text and "participants there: " + ", ".join(f"{p:03d}" for p in sorted((pid, other))) in text, text
    assert f"{capture / f'{other:03d}' / 'calibration' / 'camera_params.json'}: camera calibration not found" in text
    for v in damaged:
        assert sum(line.startswith(f"{v}: ") for line in e.value.problems) == 1, (v, text)
    assert f"{calib} camera {serial}: world_to_cam bottom row" in text, text
    assert took < 30, took
    r = CliRunner().invoke(app, ["run", "--capture", str(capture), "--out", str(tmp_path / "run"), "--participants",
                                 f"{pid},{other},999", "--landmarks", GT, "--store", str(tmp_path / "store.zarr")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    out = " ".join(r.output.split())  # the terminal wraps long lines
    assert "error: pointillist run: 6 problems found" in out and "participant 999: no folder" in out, r.output
    assert all(v.name in out for v in damaged) and "hint: nothing ran" in out, r.output
    # one problem is raised as itself, and the stage's own reader names the calibration file
    pc1 = PipelineConfig(capture=str(capture), participants=[pid], landmarks=GT, out=str(tmp_path / "run"),
                         cameras=[s for s in SERIALS if s != serial and f"cam_{s}.mp4" not in
                                  {v.name for v in damaged}][:2], **TINY)
    assert check_run(pc1, until="landmarks") is None
    with pytest.raises(InputError, match="participant 999: no folder"):
        check_run(PipelineConfig(**{**pc1.to_dict(), "participants": [999]}), until="landmarks")
    with pytest.raises(NersembleError, match=f"{calib}"):
        NersembleSequence(capture, pid, "EXP-1-head", serials=[serial])
