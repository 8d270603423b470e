"""Synthetic identities that differ where the paper's claims live (issue 30 item 1): hair
kind (bald to long), hairline, head shape and colours, each identity's ground-truth cloud
recorded; everything reproducible by seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointillist_data.capture.appearance import HAIR_KINDS, IdentityStyle, face_regions, identity_style
from pointillist_data.capture.synthetic import SyntheticCaptureConfig, make_synthetic_capture
from pointillist_data.flame import FlameParams
from pointillist_data.gaussians import read_ply

TINY = {"identities": 4, "timesteps": 1, "scale": 0.01}  # 22 x 32 frames


@pytest.fixture(scope="module")
def four(tmp_path_factory, demo_asset):
    out = tmp_path_factory.mktemp("four")
    summary = make_synthetic_capture(out, SyntheticCaptureConfig(seed=3, **TINY), demo_asset)
    return out, summary


def test_ground_truth_counts_span_2x_and_are_recorded(four, demo_asset):
    out, summary = four
    counts = {}
    for pid, rec in summary["participants"].items():
        g = read_ply(out / rec["ground_truth"], demo_asset.num_faces)  # the file, not the generator's answer
        assert rec["gaussians"] == len(g) == sum(rec["region_gaussians"].values())
        counts[pid] = len(g)
    assert max(counts.values()) >= 2 * min(counts.values()), counts
    assert json.loads((out / "capture.json").read_text())["participants"] == summary["participants"]


def test_hair_extent_differs_bald_has_no_hair(four, demo_asset):
    out, summary = four
    recs = summary["participants"]
    kinds = {pid: (r["style"] or {"hair": None})["hair"] for pid, r in recs.items()}
    assert kinds["900"] is None and sorted(k for k in kinds.values() if k) == sorted(HAIR_KINDS[:3])
    hair_faces = face_regions(demo_asset) == 1  # the template's scalp, independent of the styles
    per_face = {}
    for pid, r in recs.items():
        g = read_ply(out / r["ground_truth"], demo_asset.num_faces)
        per_face[kinds[pid]] = np.bincount(g.binding, minlength=demo_asset.num_faces)[hair_faces]
    bald, long_ = per_face["bald"], per_face["long"]
    assert recs[[p for p, k in kinds.items() if k == "bald"][0]]["region_gaussians"]["hair"] == 0
    assert bald.max() <= 7  # skin density (4..7 per face) on the scalp: no hair layer
    assert long_.mean() >= 3 * bald.mean() and per_face[None].min() >= 14
    # long hair reaches the nape: faces outside the template's scalp carry the hair density too
    long_pid = [p for p, k in kinds.items() if k == "long"][0]
    assert recs[long_pid]["region_gaussians"]["hair"] > recs["900"]["region_gaussians"]["hair"]


def test_head_shape_and_colours_differ(four):
    out, summary = four
    shapes = [FlameParams.load(out / f"{pid}/ground_truth/flame_param.npz").shape[:3] for pid in summary["participants"]]
    sizes = [float(np.linalg.norm(s)) for s in shapes]
    assert len(set(np.round(sizes, 4))) == 4
    styles = [r["style"] for r in summary["participants"].values() if r["style"]]
    assert len({tuple(s["skin"]) for s in styles}) == 3 and min(s["shape_gain"] for s in styles) != max(s["shape_gain"] for s in styles)


def test_same_seed_gives_byte_identical_identities(four, tmp_path, demo_asset):
    """An identity's files depend on the seed and its index only: a 2-identity capture repeats
    the first two of the 4-identity one byte for byte (so a recipe can grow N without changing
    the identities it already has)."""
    out, _ = four
    again = tmp_path / "again"
    make_synthetic_capture(again, SyntheticCaptureConfig(seed=3, **{**TINY, "identities": 2}), demo_asset)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] in
                   ("900", "901"))
    assert files and files == sorted(p.relative_to(again) for p in again.rglob("*")
                                     if p.is_file() and p.relative_to(again).parts[0] != "capture.json")
    for f in files:
        assert (out / f).read_bytes() == (again / f).read_bytes(), f
    assert identity_style(2, 3) == identity_style(2, 3) != identity_style(2, 4)


def test_first_identity_keeps_the_original_appearance():
    assert identity_style(0, 0) is None and identity_style(0, 9) is None
    with pytest.raises(ValueError, match="hair"):
        IdentityStyle("mohawk", 0.0, 1.0, (0.5, 0.5, 0.5), (0.1, 0.1, 0.1))
