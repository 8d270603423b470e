"""Token store: write throughput, random-window and sequential read throughput.

Targets on a 2-core machine: random 12000-token windows at no less than half the throughput
of the same windows read from an uncompressed ``np.memmap``; a full sequential scan at
500 MB/s or more (decompressed); writing at 100 MB/s or more (bytes of all arrays).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pointillist_data.store.loader import TokenWindowDataset
from pointillist_data.store.token_store import TokenStore
from pointillist_data.store.write import Sample, StoreConfig, TokenStoreWriter
from pointillist_data.tokens import encode


def _samples(k: int, n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(k):
        p = rng.uniform(-0.15, 0.15, (n, 3))
        b = rng.integers(0, 10144, n)
        t, o = encode(p, b, return_order=True)
        f = lambda *s: rng.random(s, dtype=np.float32)  # noqa: E731
        out.append(Sample(f"{i:04d}", t, p[o].astype(np.float32), b[o].astype(np.int32), f(n, 3), f(n), f(n, 3),
                          f(n, 4), np.zeros(300, np.float32), np.zeros((128, 128, 3), np.uint8)))
    return out


def run() -> dict:
    tmp = Path(tempfile.mkdtemp())
    try:
        samples = _samples(64, 27500)  # NeRSemble-like: ~27.5k points, 110k tokens per subject
        nbytes = sum(s.tokens.nbytes + s.points.nbytes + s.binding.nbytes + s.rgb.nbytes + s.opacity.nbytes
                     + s.scale.nbytes + s.rotation.nbytes + s.image.nbytes for s in samples)
        t0 = time.perf_counter()
        w = TokenStoreWriter.create(tmp / "bench.zarr", StoreConfig())
        for k in range(0, len(samples), 16):
            w.append(samples[k:k + 16])
        t_write = time.perf_counter() - t0
        st = TokenStore.open(tmp / "bench.zarr")
        t0 = time.perf_counter()
        tokens = st.read_all_tokens()
        t_scan = time.perf_counter() - t0
        ds = TokenWindowDataset(st, window=12000, stride=6000, seed=0)
        mm_path = tmp / "tokens.u16"
        tokens.tofile(mm_path)
        mm = np.memmap(mm_path, dtype=np.uint16, mode="r")
        order = ds.rank_order()[:2000]
        t0 = time.perf_counter()
        for r in order:
            i, s = ds.windows[r]
            s0 = int(st.offsets[i]) + int(s)
            np.array(mm[s0:s0 + 12000], dtype=np.int64)
        t_mm = time.perf_counter() - t0
        ds.window_item(int(order[0]))  # the loader's one sequential read happens here
        t0 = time.perf_counter()
        for r in order:
            ds.window_item(int(r))
        t_ds = time.perf_counter() - t0
        return {
            "samples": len(samples), "bytes_written": nbytes, "write_MBps": round(nbytes / t_write / 1e6, 1),
            "scan_tokens_MBps": round(tokens.nbytes / t_scan / 1e6, 1),
            "random_windows_per_s_loader": round(len(order) / t_ds, 1),
            "random_windows_per_s_memmap": round(len(order) / t_mm, 1),
            "loader_over_memmap": round(t_mm / t_ds, 2),
            "targets": {"write_MBps_min": 100, "scan_MBps_min": 500, "loader_over_memmap_min": 0.5},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
