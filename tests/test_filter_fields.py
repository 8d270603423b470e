"""One filter language and one field set (issue 27 item 2): ``pointillist inspect --where``,
``SampleDataset(where=)`` and ``TokenWindowDataset(where=)`` select the same samples for the
same expression, every manifest quality figure is a field, and errors name the field and the
caller's own word for the option."""

from __future__ import annotations

import json

import numpy as np
import pytest
from store_samples import SMALL, make_sample
from typer.testing import CliRunner

from pipelines.cli import app
from pointillist_data.errors import InputError
from pointillist_data.provenance import sample_provenance
from pointillist_data.store.datasets import SampleDataset
from pointillist_data.store.loader import TokenWindowDataset
from pointillist_data.store.query import FILTER_FIELDS
from pointillist_data.store.write import StoreConfig, TokenStoreWriter

# per sample: points, split, and the stage figures written into its records (None: no records)
SAMPLES = {
    "017": dict(n=400, split="train", psnr=31.0, face=0.8, frames=12, detector="mediapipe", scale=0.25, cams=16),
    "018": dict(n=60, split="train", psnr=26.5, face=2.4, frames=6, detector="files:{capture}/GT", scale=0.5, cams=8),
    "019": dict(n=900, split="test", psnr=29.0, face=1.1, frames=12, detector="mediapipe", scale=0.25, cams=16),
    "020": dict(n=30, split="unassigned", psnr=None, face=None, frames=None, detector=None, scale=None, cams=None),
}


def _records(f: dict) -> dict:
    """Stage records as the runner writes them (the fields provenance copies from)."""
    if f["psnr"] is None:
        return {}
    return {"landmarks": {"status": "complete", "config": {"detector": f["detector"], "selection": {"scale": f["scale"]}},
                          "metrics": {"cameras": f["cams"]}},
            "track": {"status": "complete", "metrics": {"landmark_error_px_mean": 1.5, "vertex_error_face_mm_mean": f["face"],
                                                        "vertex_error_mm_mean": 2 * f["face"],
                                                        "frames_tracked": f["frames"]}},
            "fit": {"status": "complete", "metrics": {"psnr_heldout_db": f["psnr"], "ssim_heldout": 0.9,
                                                      "gaussians": 1000, "empty_faces": 3}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fields") / "s.zarr"
    samples = [make_sample(int(sid), f["n"]) for sid, f in SAMPLES.items()]
    ann = {s.subject_id: {"split": SAMPLES[s.subject_id]["split"],
                          "provenance": sample_provenance(s.subject_id, s.num_points, len(s.tokens),
                                                          _records(SAMPLES[s.subject_id]), flame={})}
           for s in samples}
    TokenStoreWriter.create(path, StoreConfig(**SMALL)).append(samples, annotations=ann)
    # binding figures from the written arrays themselves (the reference for faces_used / max_per_face)
    counts = {s.subject_id: np.bincount(s.binding, minlength=10144) for s in samples}
    return path, {k: {"faces_used": int((c > 0).sum()), "max_per_face": int(c.max())} for k, c in counts.items()}


def _expected(expr_ref, bind) -> list[str]:
    return [sid for sid, f in SAMPLES.items() if expr_ref(f, bind[sid])]


CASES = [  # expression, the same predicate over the values written above
    ("split == test", lambda f, b: f["split"] == "test"),
    ("split != train", lambda f, b: f["split"] != "train"),
    ("psnr >= 28 and not landmark_source == files",
     lambda f, b: f["psnr"] is not None and f["psnr"] >= 28 and not (f["detector"] or "").startswith("files")),
    ("landmark_source == files", lambda f, b: (f["detector"] or "").startswith("files")),
    ("vertex_face_mm < 1.5 or frames >= 10", lambda f, b: f["face"] is not None and (f["face"] < 1.5 or f["frames"] >= 10)),
    ("scale == 0.25 and cameras >= 16", lambda f, b: f["scale"] == 0.25 and f["cams"] >= 16),
    ("faces_used > 100", lambda f, b: b["faces_used"] > 100),
    ("max_per_face >= 2 and points < 500", lambda f, b: b["max_per_face"] >= 2 and f["n"] < 500),
    ("subject_id == 017 or subject_id == '020'", lambda f, b: f is SAMPLES["017"] or f is SAMPLES["020"]),
    ("not psnr >= 0", lambda f, b: f["psnr"] is None),
]


@pytest.mark.parametrize("expr,ref", CASES, ids=[c[0] for c in CASES])
def test_same_where_selects_the_same_ids_on_every_path(store, expr, ref):
    path, bind = store
    want = _expected(ref, bind)
    # 1. the command line
    r = CliRunner().invoke(app, ["inspect", str(path), "--json", "--where", expr, "--png", str(path.parent / "i.png")])
    assert r.exit_code == 0, r.output
    cli = [row["subject_id"] for row in json.loads(r.output[r.output.index("{"): r.output.rindex("}") + 1])["table"]]
    # 2. the map-style dataset
    py = SampleDataset(path, where=expr).subject_ids
    # 3. the training windows (every window of a kept sample, none of the others)
    win = TokenWindowDataset(path, window=400, stride=400, where=expr, shuffle=False)
    from_windows = sorted({win.store.subject_ids()[int(x["sample"])] for x in win})
    assert cli == py == want, (cli, py, want)
    assert win.subject_ids == want and from_windows == want


def test_every_quality_figure_is_a_field(store):
    path, _ = store
    rows = SampleDataset(path).table
    for name in ("vertex_face_mm", "landmark_source", "scale", "cameras", "frames", "psnr", "faces_used",
                 "max_per_face", "split", "subject_id"):
        assert name in FILTER_FIELDS, name
    by = {r["subject_id"]: r for r in rows}
    assert by["018"]["vertex_face_mm"] == 2.4 and by["018"]["landmark_source"] == "files"  # the pattern is not kept
    assert by["017"]["scale"] == 0.25 and by["017"]["cameras"] == 16 and by["020"]["landmark_source"] is None


@pytest.mark.parametrize("expr,words", [
    ("colour == red", ["unknown field 'colour'"]),
    ("split >= 2", ["split", "text"]),
    ("psnr == high", ["psnr", "number"]),
    ("psnr >=", []),
])
def test_errors_name_the_field_and_the_callers_word(store, expr, words):
    path, _ = store
    for make in (lambda: SampleDataset(path, where=expr), lambda: TokenWindowDataset(path, window=400, where=expr)):
        with pytest.raises(InputError) as e:
            make()
        assert str(e.value).startswith("where=:") and all(w in str(e.value) for w in words), str(e.value)
    r = CliRunner().invoke(app, ["inspect", str(path), "--where", expr, "--png", str(path.parent / "i.png")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "--where" in r.output
    assert all(w in r.output for w in words), r.output
