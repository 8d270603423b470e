"""Tokenizer: exact rational binning, float64 decoding, the yzx token order against an
independent reference, order invariance and the grammar check."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pointillist_data.tokens import (
    DEFAULT_BOX,
    FRAME,
    OutOfBoxError,
    QuantBox,
    TokenGrammarError,
    Vocabulary,
    check_grammar,
    decode,
    dequantize,
    encode,
    quantize,
)

VOCAB = Vocabulary()
BOX = DEFAULT_BOX


def clouds(max_n=200):
    n = st.integers(1, max_n)
    return n.flatmap(lambda k: st.tuples(
        arrays(np.float64, (k, 3), elements=st.floats(0.0, 1.0, allow_nan=False)),
        arrays(np.int64, (k,), elements=st.integers(0, VOCAB.num_faces - 1)),
    ))


def _to_box(u):
    lo, hi = np.asarray(BOX.lo), np.asarray(BOX.hi)
    return lo + u * (hi - lo)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clouds())
def test_round_trip_within_half_a_bin(cloud):
    u, b = cloud
    p = _to_box(u)
    tokens, order = encode(p, b, BOX, VOCAB, return_order=True)
    assert tokens.dtype == np.uint16 and len(tokens) == 4 * len(p) + 8
    q, bb = decode(tokens, BOX, VOCAB)
    assert q.dtype == np.float64
    half = BOX.bin_size(VOCAB.num_bins) / 2
    assert np.all(np.abs(q - p[order]) <= half * (1 + 1e-9))
    np.testing.assert_array_equal(bb, b[order])
    assert np.all(tokens[:FRAME] == VOCAB.start) and np.all(tokens[-FRAME:] == VOCAB.end)


@settings(max_examples=100, deadline=None)
@given(clouds(), st.randoms(use_true_random=False))
def test_same_set_in_any_order_gives_same_sequence(cloud, rnd):
    u, b = cloud
    p = _to_box(u)
    perm = list(range(len(p)))
    rnd.shuffle(perm)
    np.testing.assert_array_equal(encode(p, b, BOX, VOCAB), encode(p[perm], b[perm], BOX, VOCAB))


@settings(max_examples=200, deadline=None)
@given(clouds(50), st.data())
def test_grammar_check_names_first_bad_position(cloud, data):
    u, b = cloud
    tokens = encode(_to_box(u), b, BOX, VOCAB).astype(np.int64)
    pos = data.draw(st.integers(0, len(tokens) - 1))
    if pos < FRAME or pos >= len(tokens) - FRAME:
        bad = data.draw(st.integers(0, VOCAB.start - 1))  # anything but the frame token
    elif (pos - FRAME) % 4 == 3:
        bad = data.draw(st.sampled_from([0, 1023, VOCAB.start, VOCAB.pad]))  # not a binding
    else:
        bad = data.draw(st.integers(1024, VOCAB.pad))  # not a coordinate
    tokens[pos] = bad
    with pytest.raises(TokenGrammarError) as e:
        check_grammar(tokens, VOCAB, check_order=False)
    assert e.value.position == pos
    assert f"token {pos}:" in str(e.value)


def test_order_and_length_violations():
    p = np.array([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0]])
    t = encode(p, np.array([3, 4]), BOX, VOCAB)
    swapped = t.copy()
    swapped[4:8], swapped[8:12] = t[8:12], t[4:8]
    with pytest.raises(TokenGrammarError, match="token 8: point out of yzx order"):
        decode(swapped, BOX, VOCAB)
    with pytest.raises(TokenGrammarError, match="not 4N"):
        check_grammar(t[:-1], VOCAB)
    assert VOCAB.size == 11171 and VOCAB.start == 11168 and VOCAB.pad == 11170


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        encode(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="binding 10144 of point 1"):
        encode(np.zeros((2, 3)), np.array([0, 10144]))
    with pytest.raises(ValueError, match="not finite"):
        encode(np.array([[np.nan, 0, 0]]), np.array([0]))
    far = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    with pytest.raises(OutOfBoxError, match="1 point"):
        encode(far, np.array([0, 1]))
    with pytest.warns(UserWarning, match="clamped 1 point"):
        t = encode(far, np.array([0, 1]), out_of_box="clamp")
    assert decode(t)[0][:, 0].max() < 0.2
    with pytest.raises(ValueError):
        QuantBox((0, 0, 0), (1, -1, 1))


def _exact_bin(p: float, lo: float, hi: float, n: int = 1024) -> int:
    """The data format's definition, in exact rational arithmetic on the float64 values."""
    return min(max(math.floor((Fraction(p) - Fraction(lo)) * n / (Fraction(hi) - Fraction(lo))), 0), n - 1)


def test_quantize_is_exact_rational_binning_at_bin_edges():
    rng = np.random.default_rng(2026)
    naive_off = 0
    for _ in range(200):  # random non-dyadic boxes
        lo = rng.uniform(-0.3, -0.05, 3) + rng.uniform(0, 1e-3, 3) / 7
        hi = lo + rng.uniform(0.1, 0.5, 3) / 3
        box = QuantBox(tuple(lo), tuple(hi))
        k = np.concatenate([[0, 1, 511, 512, 1023, 1024], rng.integers(0, 1025, 20)])
        edges = lo + k[:, None] * (hi - lo) / 1024  # float64 values at (or next to) the bin edges
        pts = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
        pts = np.clip(pts, lo, hi)
        got = quantize(pts, box)
        want = np.array([[_exact_bin(float(pts[i, a]), float(lo[a]), float(hi[a])) for a in range(3)]
                         for i in range(len(pts))])
        np.testing.assert_array_equal(got, want)
        naive = np.clip(np.floor((pts - lo) / ((hi - lo) / 1024)), 0, 1023)  # precomputed bin width
        naive_off += int((naive != want).any())
    assert naive_off > 0  # these edge points do expose float rounding


def test_dequantize_gives_float64_bin_centres():
    rng = np.random.default_rng(5)
    lo, hi = (-0.2137, -0.2611, -0.1999), (0.1913, 0.2017, 0.2003)
    box = QuantBox(lo, hi)
    q = rng.integers(0, 1024, (500, 3))
    got = dequantize(q, box)
    assert got.dtype == np.float64
    for i in range(0, 500, 7):
        for a in range(3):
            bin_w = (Fraction(hi[a]) - Fraction(lo[a])) / 1024
            exact = Fraction(lo[a]) + (int(q[i, a]) + Fraction(1, 2)) * bin_w
            assert abs(Fraction(float(got[i, a])) - exact) <= bin_w * Fraction(1, 10**9)
            assert _exact_bin(float(got[i, a]), lo[a], hi[a]) == q[i, a]  # a centre falls in its own bin


@settings(max_examples=60, deadline=None)
@given(clouds(120))
def test_token_order_matches_independent_reference(cloud):
    u, b = cloud
    p = _to_box(u)
    lo, hi = BOX.lo, BOX.hi
    rows = []
    for pt, face in zip(p.tolist(), b.tolist(), strict=True):
        x, y, z = (_exact_bin(pt[a], lo[a], hi[a]) for a in range(3))
        rows.append((y, z, x, face))  # bottom to top: y, then z, then x, then the binding
    expected = [VOCAB.start] * FRAME
    for y, z, x, face in sorted(rows):
        expected += [x, y, z, VOCAB.binding_offset + face]
    expected += [VOCAB.end] * FRAME
    assert encode(p, b, BOX, VOCAB).tolist() == expected
