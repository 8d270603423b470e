"""Small token-store samples shared by the store tests (no torch import: subprocesses use it)."""

from __future__ import annotations

import numpy as np

from pointillist_data.store.write import Sample
from pointillist_data.tokens import encode

SMALL = dict(tokens_per_shard=1 << 15, tokens_per_chunk=1 << 12, points_per_shard=1 << 13, points_per_chunk=1 << 10,
             image_size=(8, 8))


def make_sample(i: int, n: int, seed: int | None = None) -> Sample:
    """Subject ``f"{i:03d}"`` with ``n`` random points in the default box, tokenized by ``encode``."""
    rng = np.random.default_rng(seed if seed is not None else i)
    p = rng.uniform(-0.15, 0.15, (n, 3))
    b = rng.integers(0, 10144, n)
    t, o = encode(p, b, return_order=True)
    return Sample(f"{i:03d}", t, p[o].astype(np.float32), b[o].astype(np.int32), rng.random((n, 3)).astype(np.float32),
                  rng.random(n).astype(np.float32), rng.random((n, 3)).astype(np.float32),
                  rng.random((n, 4)).astype(np.float32), rng.normal(size=300).astype(np.float32),
                  rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
