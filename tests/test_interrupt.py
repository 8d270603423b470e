"""Ctrl-C on `pointillist run`: exit 130 with one line, no dask noise, the stage recorded as
interrupted (not as a killed worker), and the same command resumes (the fit from its checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import TINY
from typer.testing import CliRunner

from pipelines.cli import app

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def test_ctrl_c_on_run_is_recorded_and_the_same_command_resumes(tiny_capture, tmp_path):
    root, cfg = tiny_capture
    pid = f"{cfg.participants[0]:03d}"
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({**TINY, "fitting": {"iterations": 20, "checkpoint_every": 5, "log_every": 1000}}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--capture", str(root), "--out", str(out), "--participants",
           pid, "--landmarks", GT, "--workers", "1", "--config", str(conf), "--until", "fit"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the driver and its workers
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    fit_dir = out / "work" / pid / "fit"
    t0 = time.time()
    while time.time() - t0 < 600 and proc.poll() is None and not list(fit_dir.glob("*.checkpoint/fit.pt")):
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before its fit wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # one line: no tornado traceback, no nanny warnings, no leaked-semaphore report
    assert err.strip() == "interrupted; re-run the same command to resume", err
    rec = json.loads((fit_dir / "record.json").read_text())
    assert rec["status"] == "interrupted" and "Ctrl-C" in rec["error"]
    st = CliRunner().invoke(app, ["status", str(out)])
    assert st.exit_code == 0 and "interrupted" in st.output, st.output
    assert "killed or out of memory" not in st.output and "re-run the same command to resume" in st.output
    assert list(fit_dir.glob("*.checkpoint/fit.pt"))  # what is resumable stays
    track_started = json.loads((out / "work" / pid / "track" / "record.json").read_text())["started"]

    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((fit_dir / "record.json").read_text())
    assert rec["status"] == "complete" and rec["metrics"]["resumed_from"] >= 5
    assert json.loads((out / "work" / pid / "track" / "record.json").read_text())["started"] == track_started
    assert not list(fit_dir.glob("*.checkpoint")) and not list(fit_dir.glob("*.tmp-*"))
