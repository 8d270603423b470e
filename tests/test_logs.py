"""Third-party log noise (pointillist_data/logs.py): MediaPipe's native TFLite / absl lines and
dask's distributed logging stay off stderr unless ``--verbose`` / ``POINTILLIST_VERBOSE=1``;
real messages written to the same file descriptor still come through."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pointillist_data.logs import NOISE

# lines as MediaPipe 0.10 / TFLite / dask 2026 print them (from a `pointillist run` on the demo capture)
SEEN = ["INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "W0000 00:00:1796649293.023991   23829 inference_feedback_manager.cc:114] Feedback manager requires a "
        "model with a single signature inference. Disabling support for feedback tensors.",
        "W0000 00:00:1796649293.216139   23830 landmark_projection_calculator.cc:186] Using NORM_RECT without "
        "IMAGE_DIMENSIONS is only supported for the square ROI.",
        "2026-12-07 13:14:58,867 - distributed.nanny - WARNING - Worker process still alive after 4.0 seconds, "
        "killing"]
REAL = ["error: --capture /data/x: capture folder not found", "Traceback (most recent call last):",
        "W0000 is not a log record", "ValueError: I1207 frames"]


def test_noise_pattern_matches_the_third_party_lines_only():
    assert all(NOISE.match(s) for s in SEEN)
    assert not any(NOISE.match(s) for s in REAL)


def _run(code: str, verbose: bool) -> str:
    env = {**os.environ, "POINTILLIST_VERBOSE": "1" if verbose else "0"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_native_stderr_filter_drops_noise_and_keeps_real_lines():
    """Lines written to fd 2 directly, from another thread too (as MediaPipe's graph threads
    log), and right before the process ends."""
    code = f"""
        import os, threading
        from pointillist_data.logs import filter_native_stderr
        filter_native_stderr()
        lines = {(chr(10).join(SEEN + REAL) + chr(10)).encode()!r}
        t = threading.Thread(target=os.write, args=(2, lines[:len(lines) // 2]))
        t.start(); t.join()
        os.write(2, lines[len(lines) // 2:])
    """
    quiet = _run(code, verbose=False).splitlines()
    assert quiet == REAL
    assert _run(code, verbose=True).splitlines() == SEEN + REAL


def test_mediapipe_native_lines_hidden_unless_verbose():
    pytest.importorskip("mediapipe")
    code = """
        import numpy as np
        from pointillist_data.tracking.landmarks import MediaPipeDetector
        MediaPipeDetector().detect(np.full((160, 120, 3), 128, np.uint8))
    """
    loud = [ln for ln in _run(code, verbose=True).splitlines() if NOISE.match(ln)]
    assert loud, "MediaPipe printed nothing to filter (the check below would prove nothing)"
    assert [ln for ln in _run(code, verbose=False).splitlines() if ln.strip()] == []


@pytest.mark.slow
def test_run_stderr_has_no_third_party_lines(synthetic_capture, tmp_path):
    """A `pointillist run` with MediaPipe landmarks on dask workers: nothing but our own lines
    (7 lines of TFLite, absl and distributed.nanny before, measured on the demo capture)."""
    pytest.importorskip("mediapipe")
    root, cfg, _ = synthetic_capture
    env = {k: v for k, v in os.environ.items() if k != "POINTILLIST_VERBOSE"}
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--capture", str(root), "--out",
                        str(tmp_path / "o"), "--participants", str(cfg.participants[0]), "--until", "landmarks",
                        "--workers", "1", "--frames", "0:2"], capture_output=True, text=True, env={**env, "PYTHONPATH": os.getcwd()},
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    noise = [ln for ln in r.stderr.splitlines() if NOISE.match(ln) or "distributed." in ln or "absl" in ln]
    assert noise == []
