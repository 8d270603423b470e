"""Reading FLAME motions from other tools (``pointillist_data.interop.motion``).

The files are written here from the upstream formats' key names, as documented by them
(read, never copied):

* VHAP ``vhap/model/tracker.py`` ``save_result``: ``tracked_flame_params_<epoch>.npz`` with
  ``rotation translation neck_pose jaw_pose (T, 3)``, ``eyes_pose (T, 6)``, ``shape (300,)``,
  ``expr (T, 100)``, ``static_offset (1, V, 3)``, ``timestep_id (T,)`` strings plus
  ``lights``, ``tex``, ``n_processed_frames``, ``image_size``;
* GaussianAvatars ``scene/flame_gaussian_model.py``: ``flame_param.npz`` of exactly ``shape
  expr rotation neck_pose jaw_pose eyes_pose translation static_offset dynamic_offset``;
* LAM (aigc3d/LAM): ``flame_params.json`` of its web renderer's avatar archive
  (``create_zip_archive`` in ``app_lam.py``; the renderer reads ``rotation``, ``expr``,
  ``neck_pose``, ``jaw_pose``, ``eyes_pose`` as per-frame lists), and the motion folders of
  its ``assets/sample_motion/export/<name>/flame_param/<t:05d>.npz`` whose arrays have a
  leading 1 (``lam/runners/infer/head_utils.py`` ``load_flame_params`` takes ``[0]``).
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from pointillist_data.errors import PointillistError
from pointillist_data.flame.params import FlameParams

V = 5143  # any vertex count: offsets are only carried


def _motion(T: int, E: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"rotation": rng.normal(scale=0.1, size=(T, 3)), "translation": rng.normal(scale=0.01, size=(T, 3)),
            "neck_pose": rng.normal(scale=0.1, size=(T, 3)), "jaw_pose": rng.normal(scale=0.1, size=(T, 3)),
            "eyes_pose": rng.normal(scale=0.1, size=(T, 6)), "expr": rng.normal(size=(T, E)),
            "shape": rng.normal(size=300)}


def _same(p: FlameParams, m: dict, E: int) -> None:
    for k in ("rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose"):
        np.testing.assert_allclose(getattr(p, k), m[k], rtol=0, atol=1e-6, err_msg=k)
    e = np.zeros((len(m["expr"]), E))
    n = min(E, m["expr"].shape[1])
    e[:, :n] = m["expr"][:, :n]
    np.testing.assert_allclose(p.expr, e, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p.shape, m["shape"], rtol=0, atol=1e-6)


def test_vhap_tracked_file_round_trip(tmp_path):
    from pointillist_data.interop.motion import read_motion

    m = _motion(5)
    path = tmp_path / "tracked_flame_params_30.npz"
    np.savez(path, **m, static_offset=np.zeros((1, V, 3)), timestep_id=np.array([f"{t:05d}" for t in range(5)]),
             lights=np.zeros((5, 9, 3)), tex=np.zeros((1, 100)), n_processed_frames=np.array(5),
             image_size=np.array([512, 512]))
    r = read_motion(path, 100)
    assert r.format == "vhap" and r.warnings == []
    _same(r.params, m, 100)
    assert list(r.params.timestep_id) == [f"{t:05d}" for t in range(5)]
    # the tracking folder itself: VHAP's exporter's choice, the largest epoch
    np.savez(tmp_path / "tracked_flame_params_10.npz", **_motion(2, seed=1))
    r = read_motion(tmp_path, 100)
    assert r.params.num_frames == 5 and r.source.endswith("tracked_flame_params_30.npz")


def test_gaussian_avatars_flame_param_round_trip(tmp_path):
    from pointillist_data.interop.motion import read_motion

    m = _motion(4)
    path = tmp_path / "flame_param.npz"
    np.savez(path, **{k: v.astype(np.float32) for k, v in m.items()}, static_offset=np.zeros((V, 3), np.float32),
             dynamic_offset=np.zeros((4, V, 3), np.float32))
    r = read_motion(path, 100)
    assert r.format == "gaussian_avatars"
    _same(r.params, m, 100)


def test_lam_json_sequence_and_per_frame_folders_round_trip(tmp_path):
    from pointillist_data.interop.motion import read_motion

    m = _motion(6, E=100, seed=2)
    seq = tmp_path / "flame_params.json"
    seq.write_text(json.dumps({k: v.tolist() for k, v in m.items()}))
    r = read_motion(seq, 100)
    assert r.format == "lam_json"
    _same(r.params, m, 100)
    # LAM's renderer needs no translation: a file without one is still a motion (zero translation)
    no_t = {k: v.tolist() for k, v in m.items() if k != "translation"}
    seq.write_text(json.dumps(no_t))
    np.testing.assert_array_equal(read_motion(seq, 100).params.translation, np.zeros((6, 3)))
    # a per-frame folder of JSON files, one frame each (1-D lists), sorted by name
    frames = tmp_path / "json_frames"
    frames.mkdir()
    for t in range(6):
        (frames / f"{t:05d}.json").write_text(json.dumps({k: (v if k == "shape" else v[t]).tolist()
                                                          for k, v in m.items()}))
    r = read_motion(frames, 100)
    assert r.format == "frames"
    _same(r.params, m, 100)
    # LAM's sample motions: export/<name>/flame_param/<t:05d>.npz, each array (1, d)
    export = tmp_path / "export" / "talk"
    (export / "flame_param").mkdir(parents=True)
    for t in reversed(range(6)):  # written out of order: read in name order
        np.savez(export / "flame_param" / f"{t:05d}.npz", **{k: (v if k == "shape" else v[t:t + 1]) for k, v in m.items()})
    for where in (export / "flame_param", export):
        r = read_motion(where, 100)
        assert r.format == "frames"
        _same(r.params, m, 100)


@pytest.mark.parametrize("n_file,n_model", [(100, 12), (10, 12)])
def test_expression_count_is_mapped_with_one_warning(tmp_path, n_file, n_model):
    from pointillist_data.interop.motion import read_motion

    m = _motion(3, E=n_file)
    FlameParams(**m).save(tmp_path / "m.npz")
    r = read_motion(tmp_path / "m.npz", n_model)
    assert r.params.expr.shape == (3, n_model)
    _same(r.params, m, n_model)
    assert len(r.warnings) == 1 and "\n" not in r.warnings[0]
    w = r.warnings[0]
    assert "m.npz" in w and str(n_file) in w and str(n_model) in w
    assert ("dropped" in w) if n_file > n_model else ("zero-padded" in w)


def _bad_files(tmp_path):
    m = _motion(3)
    yield "text.npz", lambda p: p.write_text("this is no npz\n"), "not a readable"
    yield "pickled.npz", lambda p: p.write_bytes(pickle.dumps({"expr": [1, 2]})), "not a readable"
    yield "objects.npz", lambda p: np.savez(p, **{**m, "expr": np.array([{"a": 1}] * 3, dtype=object)}), "expr"
    yield "missing.npz", lambda p: np.savez(p, **{k: v for k, v in m.items() if k != "jaw_pose"}), "jaw_pose"
    yield "shape.npz", lambda p: np.savez(p, **{**m, "eyes_pose": np.zeros((3, 3))}), "eyes_pose"
    yield "nan.npz", lambda p: np.savez(p, **{**m, "rotation": np.full((3, 3), np.nan)}), "rotation"
    yield "degrees.npz", lambda p: np.savez(p, **{**m, "jaw_pose": np.full((3, 3), 30.0)}), "jaw_pose"
    yield "no_frames.npz", lambda p: np.savez(p, **{k: v[:0] if k != "shape" else v for k, v in m.items()}), "no frames"
    yield "flame_params.json", lambda p: p.write_text("{not json"), "not valid JSON"
    yield "list.json", lambda p: p.write_text("[1, 2, 3]"), "JSON object"
    yield "ragged.json", lambda p: p.write_text(json.dumps({**{k: v.tolist() for k, v in m.items()},
                                                            "expr": [[0.0] * 100, [0.0] * 3, [0.0]]})), "expr"
    yield "nan.json", lambda p: p.write_text(json.dumps({**{k: v.tolist() for k, v in m.items()},
                                                         "neck_pose": [[float("nan")] * 3] * 3})), "neck_pose"


def test_unreadable_motion_files_raise_one_domain_error_naming_the_file(tmp_path):
    from pointillist_data.interop.motion import read_motion

    for name, write, word in _bad_files(tmp_path):
        p = tmp_path / name
        write(p)
        with pytest.raises(PointillistError) as e:
            read_motion(p, 100)
        assert name in str(e.value) and word in str(e.value), (name, str(e.value))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PointillistError, match="empty"):
        read_motion(empty, 100)
    with pytest.raises(FileNotFoundError):
        read_motion(tmp_path / "none.npz", 100)


def test_flame_params_load_names_a_non_npz_file(tmp_path):
    """Was: ``ValueError: Cannot load file containing pickled data`` (a traceback)."""
    p = tmp_path / "motion.json"
    p.write_text('{"expr": []}')
    with pytest.raises(PointillistError, match="motion.json"):
        FlameParams.load(p)


def test_avatar_command_names_a_non_npz_motion_in_one_line(tmp_path):
    """Was: a traceback ending in "pickled data". The motion is read before any model loads,
    so no checkpoint is needed to see it refused."""
    from test_cli import one_line_error
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pointillist_data.viz import save_png

    img = save_png(np.full((32, 32, 3), 128, np.uint8), tmp_path / "p.png")
    bad = tmp_path / "motion.txt"
    bad.write_text("frame 0: smile\n")
    r = CliRunner().invoke(app, ["avatar", "--image", str(img), "--out", str(tmp_path / "a"), "--checkpoint",
                                 str(tmp_path / "none.pt"), "--motion", str(bad)])
    one_line_error(r, "motion.txt")
