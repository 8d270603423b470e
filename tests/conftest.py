"""Shared fixtures: the demo head (bundled FLAME 2023 Open topology), synthetic captures."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# stores skip fsync in tests (it guards against power loss, which no test can cause; a
# crash of the writing process is safe either way); tests that cover fsync ask for it
os.environ.setdefault("POINTILLIST_FSYNC", "0")
os.environ.setdefault("POINTILLIST_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "pointillist"))


def pytest_configure(config):
    # A suite started in the background by a shell without job control (``sh -c 'make test' &``)
    # inherits SIGINT ignored, and so would every subprocess it starts: the Ctrl-C tests need
    # their commands to receive SIGINT as a terminal user's would.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def demo_asset():
    """The demo head as `make demo` uses it (bundled FLAME 2023 Open topology, with teeth)."""
    from pointillist_data.flame import resolve_flame_asset

    return resolve_flame_asset()


@pytest.fixture(scope="session")
def synthetic_capture(tmp_path_factory, demo_asset):
    """A small synthetic capture (1 identity, 3 timesteps) in the NeRSemble layout."""
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture

    out = tmp_path_factory.mktemp("capture")
    cfg = SyntheticCaptureConfig(identities=1, timesteps=3, seed=0)
    summary = make_synthetic_capture(out, cfg, demo_asset)
    return out, cfg, summary


@pytest.fixture(scope="session")
def tracked(synthetic_capture, demo_asset, tmp_path_factory):
    """The synthetic capture tracked at the demo's budgets (GT landmarks from files)."""
    from pointillist_data.flame import FlameParams
    from pointillist_data.tracking.config import TrackingConfig
    from pointillist_data.tracking.stage import load_sequence, run_tracking

    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    lmk = root / f"{pid:03d}/ground_truth/{cfg.sequence}/landmark2d/GT"
    data = load_sequence(root, pid, cfg.sequence, lmk)
    out = tmp_path_factory.mktemp("track")
    # the demo's budgets (pipelines.demo.DEMO_TRACKING): 60 % of the defaults' time
    rec = run_tracking(data, demo_asset, out, TrackingConfig(first_frame_iters=250, frame_iters=100, global_iters=50))
    return out, rec, data, FlameParams.load(root / f"{pid:03d}/ground_truth/{cfg.sequence}/flame_params.npz")


TINY = {"tracking": {"first_frame_iters": 60, "frame_iters": 20, "global_iters": 6, "render_cameras": 1},
        "fitting": {"iterations": 24, "log_every": 1000}}


@pytest.fixture(scope="session")
def tiny_capture(tmp_path_factory, demo_asset):
    """Three synthetic participants with two timesteps each at 66 x 96 pixels (a third of the
    demo's pixels, so fewer fragments in every render of tracking and fitting), for pipeline tests."""
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture

    out = tmp_path_factory.mktemp("tiny_capture")
    cfg = SyntheticCaptureConfig(identities=3, timesteps=2, seed=7, scale=0.03)
    make_synthetic_capture(out, cfg, demo_asset)
    return out, cfg
