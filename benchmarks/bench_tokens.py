"""Tokenizer: encode + decode of 1M points against np.lexsort of the same points.

Target: encode + decode at most 3x the time of ``np.lexsort`` on the same (y, z, x) keys.
"""

from __future__ import annotations

import time

import numpy as np

from pointillist_data.tokens import DEFAULT_BOX, decode, encode


def _best(fn, reps=5):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def run() -> dict:
    rng = np.random.default_rng(0)
    n = 1_000_000
    lo, hi = np.asarray(DEFAULT_BOX.lo), np.asarray(DEFAULT_BOX.hi)
    p = lo + rng.random((n, 3)) * (hi - lo)
    b = rng.integers(0, 10144, n)
    t_lex = _best(lambda: np.lexsort((p[:, 0], p[:, 2], p[:, 1])))
    tokens = encode(p, b)
    t_enc = _best(lambda: encode(p, b))
    t_dec = _best(lambda: decode(tokens))
    return {"points": n, "lexsort_s": round(t_lex, 4), "encode_s": round(t_enc, 4), "decode_s": round(t_dec, 4),
            "encode_decode_over_lexsort": round((t_enc + t_dec) / t_lex, 2), "target_ratio_max": 3.0}
