"""Shared fixtures: the demo head on real FLAME 2023 Open topology when the extract is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("POINTILLIST_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "pointillist"))


@pytest.fixture(scope="session")
def flame_basis():
    from pointillist_data.flame import find_flame_basis

    p = find_flame_basis()
    if p is None:
        pytest.skip("FLAME 2023 Open extract (shared/flame/flame2023_open_basis.npz) not present")
    return p


@pytest.fixture(scope="session")
def demo_asset():
    """The demo head as `make demo` uses it (real topology when the extract is present)."""
    from pointillist_data.flame import resolve_flame_asset

    return resolve_flame_asset()


@pytest.fixture(scope="session")
def procedural_asset():
    from pointillist_data.flame import build_demo_asset

    return build_demo_asset(seed=0, basis_path=None)


@pytest.fixture(scope="session")
def synthetic_capture(tmp_path_factory, demo_asset):
    """A small synthetic capture (1 identity, 3 timesteps) in the NeRSemble layout."""
    from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture

    out = tmp_path_factory.mktemp("capture")
    cfg = SyntheticCaptureConfig(identities=1, timesteps=3, seed=0)
    summary = make_synthetic_capture(out, cfg, demo_asset)
    return out, cfg, summary
