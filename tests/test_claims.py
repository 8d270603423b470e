"""The claim measurements of the held-out identities experiment (pointillist_model.claims,
claims_report) against references worked out by hand in each test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pointillist_model.claims import (
    binding_agreement,
    chamfer_mm,
    flame_vertex_cloud,
    medoid_index,
    paired_gap,
    partner,
    pearson,
)
from pointillist_model.claims_report import FAILS, HOLDS, UNTESTABLE, cloud_rows, nll_rows, quality_rows


def test_chamfer_distance_in_millimetres_by_hand():
    a = np.array([[0.0, 0.0, 0.0]])
    b = np.array([[0.003, 0.0, 0.0], [0.0, 0.004, 0.0]])
    # a -> b: 3 mm; b -> a: 3 and 4 mm, mean 3.5; averaged: 3.25
    assert chamfer_mm(a, b) == pytest.approx(3.25)
    assert chamfer_mm(b, b) == 0.0
    with pytest.raises(ValueError):
        chamfer_mm(a, np.zeros((0, 3)))


def test_binding_agreement_counts_the_same_face_or_a_face_sharing_a_vertex():
    faces = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7]])
    gt = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    gt_bind = np.array([1, 2])
    pts = np.array([[0.1, 0, 0], [0.9, 0, 0], [0.0, 0.1, 0]])
    bind = np.array([0, 0, 1])
    # point 0 -> gt 0 (face 1 shares vertex 2 with face 0): agrees; point 1 -> gt 1 (face 2 shares
    # nothing with face 0): disagrees; point 2 -> gt 0, the same face: agrees
    assert binding_agreement(pts, bind, gt, gt_bind, faces) == pytest.approx(2 / 3)


def test_pearson_by_hand_and_undefined_cases():
    # x = 1 2 3, y = 2 4 7: sum dx dy = 5, sxx = 2, syy = 38/3 -> r = 5 / sqrt(76/3)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(76 / 3))
    assert pearson([1, 2], [3, 4]) is None  # two points always line up
    assert pearson([1, 2, 3], [5, 5, 5]) is None  # constant
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


def test_paired_gap_rule_is_two_standard_errors():
    g = paired_gap(np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0]))  # d = 1 2 3: mean 2, sd 1
    assert g["mean"] == pytest.approx(2.0) and g["se"] == pytest.approx(1 / math.sqrt(3)) and g["holds"]
    assert not paired_gap(np.array([1.0, 0.0]), np.array([0.0, 1.0]))["holds"]  # mean 0
    with pytest.raises(ValueError):
        paired_gap(np.array([1.0]), np.array([0.0]))


def test_flame_vertex_baseline_binds_each_vertex_to_its_first_face():
    v = np.arange(15, dtype=float).reshape(5, 3)
    pts, bind = flame_vertex_cloud(v, np.array([[1, 2, 3], [0, 1, 2]]))
    assert bind.tolist() == [1, 0, 0, 0]  # vertex 4 is in no face: dropped
    assert np.array_equal(pts, v[:4])


def test_medoid_is_the_cloud_nearest_the_others():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3)) * 0.01
    clouds = [a, a + [0.001, 0, 0], a + [0.1, 0, 0]]
    assert medoid_index(clouds) == 1  # 1 mm from one, 99 mm from the other
    assert medoid_index([a]) == 0


def test_shuffled_partner_is_another_identity():
    assert [partner(i, 3) for i in range(3)] == [1, 2, 0]


def _nll(true, shuffled, none):
    return {c: np.asarray(v, float) for c, v in zip(("true", "shuffled", "none"), (true, shuffled, none), strict=True)}


def test_nll_rows_decide_by_the_stated_rule():
    clear = _nll([1.0, 1.1, 0.9, 1.0], [1.5, 1.6, 1.4, 1.55], [2.0, 2.0, 2.0, 2.0])
    none = _nll([1.0, 1.1, 0.9, 1.0], [1.0, 1.1, 0.91, 0.99], [1.0, 1.1, 0.9, 1.0])
    rows = {r["id"]: r for r in nll_rows({"test": clear, "train": none})}
    assert rows["a_portrait_test"]["verdict"] == HOLDS and not rows["a_portrait_test"]["next"]
    assert rows["a_portrait_test"]["numbers"]["gap"] == pytest.approx(0.5125)
    assert rows["a_portrait_train"]["verdict"] == FAILS and rows["a_portrait_train"]["next"]
    assert rows["a_conditioning_test"]["verdict"] == HOLDS
    assert {r["id"]: r["verdict"] for r in nll_rows({})}["a_portrait_test"] == UNTESTABLE


def test_cloud_rows_compare_with_the_best_baseline_and_flag_capped_counts():
    per = {s: {"generated": {"chamfer_mm": 2.0 + e, "binding_agreement": 0.8},
               "training medoid": {"chamfer_mm": 5.0 + e, "binding_agreement": 0.5 + e / 10},
               "FLAME vertices": {"chamfer_mm": 9.0, "binding_agreement": 0.3}} for s, e in
           (("a", 0.0), ("b", 0.5), ("c", 1.1))}
    counts = {"a": (100, 50_000), "b": (200, 90_000), "c": (300, 130_000)}
    rows = {r["id"]: r for r in cloud_rows(per, counts, cap=1000)}
    assert rows["b_chamfer"]["verdict"] == HOLDS and rows["b_chamfer"]["numbers"]["best_baseline"] == "training medoid"
    assert rows["b_chamfer"]["numbers"]["gap"] == pytest.approx(3.0)
    assert rows["b_binding"]["verdict"] == HOLDS
    assert rows["b_count"]["verdict"] == HOLDS and rows["b_count"]["numbers"]["pearson_r"] > 0.99
    capped = {r["id"]: r for r in cloud_rows(per, {**counts, "c": (1000, 130_000)}, cap=1000)}
    assert capped["b_count"]["verdict"] == FAILS  # a count at the cap says nothing about the subject


def test_quality_rows_use_the_2_mm_rule_and_the_count_correlation():
    q = {"tracking_mean_mm": {"1": 1.5, "2": 2.4, "3": 1.0}, "fitted_gaussians": {"1": 10, "2": 20, "3": 30},
         "gt_gaussians": {"1": 30, "2": 20, "3": 10}}
    rows = {r["id"]: r for r in quality_rows(q)}
    assert rows["q_tracking"]["verdict"] == FAILS and rows["q_tracking"]["numbers"]["worst"] == "2"
    assert rows["q_density"]["verdict"] == FAILS and rows["q_density"]["numbers"]["pearson_r"] == pytest.approx(-1.0)


def test_source_frame_rows_decide_by_the_stated_rule():
    """Rows for a source frame never used in training: the own frame against another
    identity's (paired gap > 2 standard errors), the portrait's NLL beside it, and the Chamfer
    distance of clouds generated from the frame against the best baseline."""
    from pointillist_model.claims_report import source_frame_rows

    frame = {"test": _nll([1.0, 1.1, 0.9, 1.0], [1.5, 1.6, 1.4, 1.55], [2.0] * 4),  # gap 0.5125 as above
             "train": _nll([1.0, 1.1, 0.9, 1.0], [1.0, 1.1, 0.91, 0.99], [1.0] * 4)}  # d = 0 0 .01 -.01
    portrait = {"test": _nll([0.5, 0.7, 0.6, 0.6], [0.0] * 4, [0.0] * 4)}
    per = {s: {"generated": {"chamfer_mm": 2.0 + e}, "training medoid": {"chamfer_mm": 5.0 + e},
               "FLAME vertices": {"chamfer_mm": 4.0 + 2 * e}} for s, e in (("a", 0.0), ("b", 0.5), ("c", 1.1))}
    rows = {r["id"]: r for r in source_frame_rows(frame, portrait, per)}
    t = rows["a_source_frame_test"]
    assert t["verdict"] == HOLDS and t["numbers"]["gap"] == pytest.approx(0.5125)
    assert t["numbers"]["nll_portrait_true"] == pytest.approx(0.6) and "portrait" in t["summary"]
    assert rows["a_source_frame_train"]["verdict"] == FAILS and "nll_portrait_true" not in \
        rows["a_source_frame_train"]["numbers"]
    c = rows["b_chamfer_source_frame"]
    # FLAME vertices: mean (4 + 5 + 6.2) / 3 = 5.067 < medoid 5.533: the best baseline; gaps 2, 2.5, 3.1
    assert c["verdict"] == HOLDS and c["numbers"]["best_baseline"] == "FLAME vertices"
    assert c["numbers"]["gap"] == pytest.approx(7.6 / 3)
    one = {r["id"]: r for r in source_frame_rows({}, {}, {"a": per["a"]})}
    assert {r["verdict"] for r in one.values()} == {UNTESTABLE}


def test_cross_reenactment_row_needs_a_reference_and_two_identities():
    from pointillist_model.claims_report import reenactment_rows

    def abl(cross_psnr, targets, reference="ground truth"):
        return {"protocol": {"driver": "901", "cross_targets": targets, "cross_reference": reference},
                "rows": [{"configuration": c, "self": {"psnr": 20.0 + i, "ssim": 0.5},
                          "cross": {"frames": 2, **({"psnr": p, "ssim": 0.4} if p is not None else {})}}
                         for i, (c, p) in enumerate(zip(("Ours (P + F)", "P only", "F only"), cross_psnr,
                                                        strict=True))]}

    rows = {r["id"]: r for r in reenactment_rows(abl([18.0, 17.0, 16.5], ["902", "903"]))}
    assert rows["c_decoder"]["verdict"] == FAILS  # self: F only has 22 dB
    cross = rows["c_decoder_cross"]
    assert cross["verdict"] == HOLDS and cross["numbers"]["targets"] == ["902", "903"]
    assert cross["numbers"]["Ours (P + F)"]["psnr"] == 18.0
    assert {r["id"]: r for r in reenactment_rows(abl([18.0, 19.0, 16.5], ["902"]))}["c_decoder_cross"][
        "verdict"] == FAILS
    lone = {r["id"]: r for r in reenactment_rows(abl([18.0, 17.0, 16.5], ["901"]))}["c_decoder_cross"]
    assert lone["verdict"] == UNTESTABLE and "drives itself" in lone["summary"]
    real = {r["id"]: r for r in reenactment_rows(abl([None] * 3, ["902"], None))}["c_decoder_cross"]
    assert real["verdict"] == UNTESTABLE
