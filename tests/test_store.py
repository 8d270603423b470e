"""Token stores: round trips, plain zarr, corruption, torn writes, validation, the loader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import zarr

from pointillist_data.loader import TokenWindowDataset, window_starts
from pointillist_data.store import ShardChecksumError, StoreError, TokenStore, validate_store
from pointillist_data.store_write import DuplicateSubjectError, Sample, StoreConfig, TokenStoreWriter
from pointillist_data.tokens import encode

SMALL = dict(tokens_per_shard=1 << 15, tokens_per_chunk=1 << 12, points_per_shard=1 << 13, points_per_chunk=1 << 10,
             image_size=(8, 8))


def make_sample(i: int, n: int, seed: int | None = None) -> Sample:
    rng = np.random.default_rng(seed if seed is not None else i)
    p = rng.uniform(-0.15, 0.15, (n, 3))
    b = rng.integers(0, 10144, n)
    t, o = encode(p, b, return_order=True)
    return Sample(f"{i:03d}", t, p[o].astype(np.float32), b[o].astype(np.int32), rng.random((n, 3)).astype(np.float32),
                  rng.random(n).astype(np.float32), rng.random((n, 3)).astype(np.float32),
                  rng.random((n, 4)).astype(np.float32), rng.normal(size=300).astype(np.float32),
                  rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))


@pytest.fixture
def store(tmp_path):
    w = TokenStoreWriter.create(tmp_path / "ds.zarr", StoreConfig(**SMALL))
    samples = [make_sample(i, n) for i, n in enumerate([300, 5000, 40, 2600])]
    w.append(samples[:2])
    TokenStoreWriter.open(tmp_path / "ds.zarr").append(samples[2:])
    return tmp_path / "ds.zarr", samples


def test_round_trip_and_plain_zarr(store):
    path, samples = store
    st = TokenStore.open(path)
    assert len(st) == 4 and st.subject_ids() == [s.subject_id for s in samples]
    for i, s in enumerate(samples):
        got = st[i]
        np.testing.assert_array_equal(got["tokens"], s.tokens)
        np.testing.assert_array_equal(got["points"], s.points)
        np.testing.assert_array_equal(got["binding"], s.binding)
        np.testing.assert_array_equal(got["image"], s.image)
        pts, b = st.to_points(i)
        assert np.abs(pts - s.points).max() <= st.box.bin_size(1024).max() / 2 + 1e-6
    # plain zarr, without this package's reader
    g = zarr.open_group(str(path), mode="r")
    off = g["offsets"][:]
    counts = g["point_count"][:]
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(g["tokens"][off[i]: off[i] + 4 * counts[i] + 8], s.tokens)
    assert dict(g.attrs)["vocabulary"]["size"] == 11171
    summary = validate_store(str(path))
    assert summary["samples"] == 4 and summary["points"] == sum(s.num_points for s in samples)


def test_bad_input_and_duplicates(store):
    path, samples = store
    w = TokenStoreWriter.open(path)
    with pytest.raises(DuplicateSubjectError, match="'001'"):
        w.append([samples[1]])
    s = make_sample(9, 10)
    s.points[3, 0] = np.nan
    with pytest.raises(StoreError, match="'points'"):
        w.append([s])
    assert w.append([samples[1]], skip_existing=True) == 0
    assert len(TokenStore.open(path)) == 4
    with pytest.raises(StoreError, match="already exists"):
        TokenStoreWriter.create(path, StoreConfig(**SMALL))
    with pytest.raises(StoreError):
        TokenStore.open(path.parent / "missing.zarr")


def test_corrupted_shard_is_named(store):
    path, _ = store
    shard = path / "tokens" / "c" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardChecksumError, match=r"shard tokens/c/0 is corrupted"):
        TokenStore.open(path).tokens(0)
    with pytest.raises(ShardChecksumError, match="tokens/c/0"):
        validate_store(str(path))


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import SMALL, make_sample
    from pointillist_data.store_write import StoreConfig, TokenStoreWriter
    path, stage = sys.argv[1], sys.argv[2]
    if stage == "first":
        w = TokenStoreWriter.create(path, StoreConfig(**SMALL))
        w.append([make_sample(i, 3000) for i in range(2)])
    else:
        w = TokenStoreWriter.open(path)
        for k in range(2, 40, 2):
            w.append([make_sample(i, 3000) for i in (k, k + 1)], skip_existing=True)
            print("batch", k, flush=True)
""")


def test_torn_write_is_never_visible(tmp_path):
    path = tmp_path / "torn.zarr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, str(script), str(path), "first"], check=True, env=env)
    proc = subprocess.Popen([sys.executable, str(script), str(path), "second"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("batch")  # at least one more batch committed
    time.sleep(0.15)  # ...and kill somewhere inside a later one
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = TokenStore.open(path)
    n = len(st)
    assert n >= 4 and n % 2 == 0  # only whole batches are visible
    for i in range(n):
        np.testing.assert_array_equal(st.tokens(i), make_sample(i, 3000).tokens)
    validate_store(str(path))
    subprocess.run([sys.executable, str(script), str(path), "second"], check=True, env=env, capture_output=True)
    st = TokenStore.open(path)
    assert len(st) == 40 and st.subject_ids() == [f"{i:03d}" for i in range(40)]
    for i in (0, n, 39):
        np.testing.assert_array_equal(st.tokens(i), make_sample(i, 3000).tokens)
    validate_store(str(path))


def test_window_starts():
    assert window_starts(100, 40, 40) == [0, 40, 80]
    assert window_starts(20, 40, 8) == [0]
    with pytest.raises(ValueError):
        window_starts(100, 42, 40)


def test_loader_windows_determinism_and_resume(store):
    path, samples = store
    ds = TokenWindowDataset(str(path), window=400, stride=200, seed=3, with_conditioning=True)
    items = list(ds)
    assert len(items) == len(ds) == len(ds.windows)
    for it in items:
        i, s = int(it["sample"]), int(it["start"])
        seq = samples[i].tokens.astype(np.int64)
        n = min(400, len(seq) - s)
        np.testing.assert_array_equal(it["tokens"][:n].numpy(), seq[s:s + n])
        assert it["loss_mask"][:n].all() and not it["loss_mask"][n:].any()
        assert (it["tokens"][n:] == 11170).all() and s % 4 == 0
        assert it["image"].shape == (8, 8, 3)
    again = [int(x["sample"]) * 100000 + int(x["start"]) for x in TokenWindowDataset(str(path), 400, 200, seed=3)]
    assert again == [int(x["sample"]) * 100000 + int(x["start"]) for x in items]
    ds.set_epoch(1)
    other = [int(x["sample"]) * 100000 + int(x["start"]) for x in ds]
    assert sorted(other) == sorted(again) and other != again
    # resume: consume 7 windows, save, restore into a fresh loader
    ds.set_epoch(1)
    it = iter(ds)
    for _ in range(7):
        next(it)
    ds.advance(7)
    state = ds.state_dict()
    fresh = TokenWindowDataset(str(path), 400, 200, seed=3)
    fresh.load_state_dict(state)
    assert [int(x["sample"]) * 100000 + int(x["start"]) for x in fresh] == other[7:]
    # ranks partition the epoch
    parts = [[int(x["sample"]) * 100000 + int(x["start"]) for x in
              TokenWindowDataset(str(path), 400, 200, seed=3, rank=r, world_size=3)] for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(again) and not set(parts[0]) & set(parts[1])


def test_loader_workers_keep_the_rank_order(store):
    path, _ = store
    ds = TokenWindowDataset(str(path), 400, 200, seed=5)
    single = [int(x["sample"]) * 100000 + int(x["start"]) for x in ds]
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    multi = [int(x["sample"]) * 100000 + int(x["start"]) for x in dl]
    assert multi == single
    ds.load_state_dict({"epoch": 0, "consumed": 5, "seed": 5})
    resumed = [int(x["sample"]) * 100000 + int(x["start"]) for x in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)]
    assert resumed == single[5:]
