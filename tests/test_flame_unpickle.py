"""The restricted unpickler: chumpy and scipy.sparse without importing them, nothing else."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from pointillist_data.flame import FlameFileError, UnsafePickleError, load_flame_asset
from pointillist_data.flame.unpickle import load_restricted_pickle


@pytest.fixture
def fake_chumpy(monkeypatch):
    """A stand-in `chumpy.ch.Ch` class importable only while the test pickles with it."""
    mod = types.ModuleType("chumpy.ch")
    pkg = types.ModuleType("chumpy")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set()}

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    mod.Ch = Ch
    pkg.ch = mod
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    return Ch


def _fake_flame_dict(Ch, V=40, rng=None):
    rng = rng or np.random.default_rng(0)
    faces = np.array([[i, (i + 1) % V, (i + 2) % V] for i in range(0, V - 2)], dtype=np.uint32)
    w = rng.random((V, 5))
    w /= w.sum(1, keepdims=True)
    jreg = scipy.sparse.csc_matrix(np.abs(rng.random((5, V))) * (rng.random((5, V)) > 0.7))
    return {
        "v_template": Ch(rng.normal(size=(V, 3))),
        "f": faces,
        "shapedirs": Ch(rng.normal(size=(V, 3, 400))),
        "posedirs": Ch(rng.normal(size=(V, 3, 36))),
        "J_regressor": jreg,
        "weights": Ch(w),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
    }


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_chumpy_and_sparse_become_arrays(tmp_path, fake_chumpy, protocol):
    d = _fake_flame_dict(fake_chumpy)
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps(d, protocol=protocol))
    del sys.modules["chumpy.ch"], sys.modules["chumpy"]  # loading must not need chumpy
    out = load_restricted_pickle(p)
    np.testing.assert_array_equal(out["v_template"], d["v_template"].x)
    np.testing.assert_array_equal(out["J_regressor"], d["J_regressor"].toarray())
    asset = load_flame_asset(p, add_teeth=False)
    assert asset.n_shape == 300 and asset.n_expr == 100
    assert asset.posedirs.shape == (36, 40 * 3)
    # smplx layout: posedirs[p, 3*v + c] == file[v, c, p]
    np.testing.assert_allclose(asset.posedirs[7, 3 * 5 + 2], d["posedirs"].x[5, 2, 7])
    assert list(asset.parents) == [-1, 0, 1, 1, 1]


class _Evil:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_refuses_unexpected_class(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"v_template": _Evil()}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*builtins\.eval"):
        load_restricted_pickle(p)
    with pytest.raises(UnsafePickleError):
        load_flame_asset(p)


def test_refuses_arbitrary_class_even_inside_numpy_namespace(tmp_path):
    p = tmp_path / "np_evil.pkl"
    # numpy.testing is importable but not on the allow-list
    payload = b"\x80\x02cnumpy.testing\nassert_equal\nq\x00."
    p.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="numpy.testing.assert_equal"):
        load_restricted_pickle(p)


def test_bad_files_name_file_and_key(tmp_path, fake_chumpy):
    d = _fake_flame_dict(fake_chumpy)
    d["weights"] = fake_chumpy(np.full((40, 5), np.nan))
    p = tmp_path / "nan.pkl"
    p.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(FlameFileError, match=r"nan\.pkl \[weights\].*NaN"):
        load_flame_asset(p)
    d = _fake_flame_dict(fake_chumpy)
    del d["posedirs"]
    p2 = tmp_path / "missing.pkl"
    p2.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(FlameFileError, match=r"missing\.pkl \[posedirs\].*missing key"):
        load_flame_asset(p2)
    with pytest.raises(FlameFileError, match="file not found"):
        load_flame_asset(tmp_path / "nope.pkl")
    bad = tmp_path / "short.pkl"
    bad.write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(pickle.UnpicklingError, match="short.pkl"):
        load_flame_asset(bad)
