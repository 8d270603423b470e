"""FlameParams: VHAP key names, npz round trips, per-timestep files, validation."""

from __future__ import annotations

import numpy as np
import pytest

from pointillist_data.flame import FlameParams, FlameParamsError

VHAP_KEYS = {"rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr", "static_offset"}


def _random(T=5, V=5143, seed=0):
    rng = np.random.default_rng(seed)
    return FlameParams(
        rotation=rng.normal(size=(T, 3)), translation=rng.normal(size=(T, 3)), neck_pose=rng.normal(size=(T, 3)),
        jaw_pose=rng.normal(size=(T, 3)), eyes_pose=rng.normal(size=(T, 6)), shape=rng.normal(size=300),
        expr=rng.normal(size=(T, 100)), static_offset=rng.normal(size=(1, V, 3)) * 1e-3,
        timestep_id=np.array([f"{t:05d}" for t in range(T)]),
    )


def test_npz_round_trip_with_vhap_keys(tmp_path):
    p = _random()
    path = p.save(tmp_path / "tracked_flame_params.npz")
    with np.load(path) as z:
        assert VHAP_KEYS | {"timestep_id"} == set(z.files)
        assert z["expr"].shape == (5, 100) and z["shape"].shape == (300,) and z["eyes_pose"].shape == (5, 6)
        assert z["static_offset"].shape == (1, 5143, 3)
    back = FlameParams.load(path)
    for k in VHAP_KEYS:
        np.testing.assert_array_equal(getattr(back, k), getattr(p, k))
    assert list(back.timestep_id) == list(p.timestep_id)


def test_per_timestep_files_and_concatenate(tmp_path):
    p = _random(T=3)
    for t in range(3):
        p.frame(t).save(tmp_path / f"flame_param/{t:05d}.npz")
    # GaussianAvatars-style single-frame file with 1-D arrays also loads
    d = {k: v[0] for k, v in p.frame(1).to_dict().items() if k not in ("shape", "static_offset", "timestep_id")}
    np.savez(tmp_path / "flat.npz", shape=p.shape, **d)
    flat = FlameParams.load(tmp_path / "flat.npz")
    np.testing.assert_array_equal(flat.expr, p.expr[1:2])
    frames = [FlameParams.load(tmp_path / f"flame_param/{t:05d}.npz") for t in range(3)]
    cat = FlameParams.concatenate(frames)
    np.testing.assert_array_equal(cat.jaw_pose, p.jaw_pose)
    t = cat.to_torch()
    assert t["shape"].shape == (3, 300)
    again = FlameParams.from_torch(t)
    np.testing.assert_array_equal(again.expr, p.expr)


def test_validation_names_file_and_key(tmp_path):
    with pytest.raises(FlameParamsError, match="'eyes_pose' expected shape"):
        FlameParams(**{**_random(T=2).to_dict(), "eyes_pose": np.zeros((2, 3))})
    bad = _random(T=2).to_dict()
    bad["expr"][1, 3] = np.nan
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(FlameParamsError, match=r"bad\.npz: 'expr' contains NaN"):
        FlameParams.load(tmp_path / "bad.npz")
    d = _random(T=2).to_dict()
    del d["jaw_pose"]
    np.savez(tmp_path / "miss.npz", **d)
    with pytest.raises(FlameParamsError, match=r"miss\.npz: missing key.*jaw_pose"):
        FlameParams.load(tmp_path / "miss.npz")
