"""Token stores: round trips, plain zarr, corruption, torn writes, validation, the loader."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import zarr
from store_samples import SMALL, make_sample  # noqa: F401 (other test modules import them from here)

from pointillist_data.store.loader import TokenWindowDataset, window_starts
from pointillist_data.store.token_store import (
    ShardChecksumError,
    StoreError,
    TokenStore,
    check_token_store,
    validate_store,
)
from pointillist_data.store.write import DuplicateSubjectError, StoreConfig, TokenStoreWriter

FIXTURE_SHARDS = dict(tokens_per_shard=1 << 14, points_per_shard=1 << 12)


@pytest.fixture
def store(tmp_path):
    w = TokenStoreWriter.create(tmp_path / "ds.zarr", StoreConfig(**{**SMALL, **FIXTURE_SHARDS}))
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


# The `store` fixture's layout, from the format's rules (1.2: rows packed, 4N + 8 tokens per
# sample): tokens end at 1208, 21216, 21384, 31792, so token shard 0 ([0, 16384)) holds
# samples 0-1 and shard 1 samples 1-3 (sample 1 spans both); points end at 300, 5300, 5340,
# 7940: per-point shard 0 ([0, 4096)) samples 0-1, shard 1 samples 1-3. Every per-sample
# array keeps all four samples in its first chunk, except image (one chunk per sample).
# Object to corrupt -> samples affected [first, last).
CORRUPT = {
    "tokens": ("tokens/c/1", (1, 4)), "points": ("points/c/0/0", (0, 2)), "binding": ("binding/c/1", (1, 4)),
    "rgb": ("rgb/c/0/0", (0, 2)), "opacity": ("opacity/c/1", (1, 4)), "scale": ("scale/c/0/0", (0, 2)),
    "rotation": ("rotation/c/1/0", (1, 4)), "offsets": ("offsets/c/0", (0, 4)),
    "point_offsets": ("point_offsets/c/0", (0, 4)), "point_count": ("point_count/c/0", (0, 4)),
    "subject_id": ("subject_id/c/0", (0, 4)), "flame_shape": ("flame_shape/c/0/0", (0, 4)),
    "image": ("image/c/2/0/0/0", (2, 3)),
}


def flip(path, at: float = 0.5) -> None:
    """Flip every bit of one byte in the middle of a file (same size, new content)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_shard_is_named(store):
    path, _ = store
    flip(path / "tokens" / "c" / "0", 0.3)
    with pytest.raises(ShardChecksumError, match=r"tokens/c/0: corrupted.*samples affected: 0-1 \(000, 001\)"):
        TokenStore.open(path).tokens(0)
    np.testing.assert_array_equal(TokenStore.open(path).tokens(3), make_sample(3, 2600).tokens)  # other shards read
    with pytest.raises(ShardChecksumError, match="tokens/c/0"):
        validate_store(str(path))


def test_corruption_of_every_array_is_caught(store, tmp_path):
    path, samples = store
    assert set(TokenStore.open(path).array_names()) == set(CORRUPT)  # every array is covered below
    for name, (key, (first, last)) in CORRUPT.items():
        p = tmp_path / f"c-{name}.zarr"
        shutil.copytree(path, p)
        flip(p / key)
        report = check_token_store(p)
        found = [x for x in report["problems"] if x.key == key]
        assert found and "corrupted" in found[0].problem, (name, [str(x) for x in report["problems"]])
        if name != "offsets":  # a damaged commit array cannot say how many samples it committed
            assert found[0].samples == (first, last), (name, str(found[0]))
        with pytest.raises(ShardChecksumError, match=key):  # a checked read names the object
            TokenStore.open(p)[first]
        if name not in ("offsets", "point_offsets", "point_count", "subject_id"):
            st = TokenStore.open(p)  # ...and the samples outside it still read
            other = 3 if first == 0 and last < 4 else None
            if other is not None:
                np.testing.assert_array_equal(st[other]["image"], samples[other].image)
        shutil.rmtree(p)
    # the manifest checksums itself; array metadata is fingerprinted
    p = tmp_path / "m.zarr"
    shutil.copytree(path, p)
    (p / "manifest.json").write_text((p / "manifest.json").read_text().replace('"points": 300', '"points": 301'))
    with pytest.raises(ShardChecksumError, match="manifest.json: corrupted"):
        TokenStore.open(p).tokens(0)
    assert [x.array for x in check_token_store(p)["problems"]] == ["manifest.json"]
    shutil.copytree(path, p, dirs_exist_ok=True)
    meta = p / "image" / "zarr.json"
    meta.write_text(meta.read_text().replace('"fill_value": 0', '"fill_value": 7'))
    assert [x.key for x in check_token_store(p)["problems"]] == ["image/zarr.json"]


def test_validate_lists_every_problem(store):
    from typer.testing import CliRunner

    from pipelines.cli import app

    path, _ = store
    for key in ("tokens/c/1", "image/c/2/0/0/0", "flame_shape/c/0/0"):
        flip(path / key)
    r = CliRunner().invoke(app, ["validate", str(path)])
    assert r.exit_code == 1, r.output
    for key, samples in (("tokens/c/1", "1-3 (001, 002, 003)"), ("image/c/2/0/0/0", "2 (002)"),
                         ("flame_shape/c/0/0", "0-3 (000, 001, 002, 003)")):
        assert f"{key}: corrupted" in r.output and f"samples affected: {samples}" in r.output, r.output
    assert "3 problem(s)" in r.output


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from store_samples import make_sample
    from pointillist_data.store.write import TokenStoreWriter
    w = TokenStoreWriter.open(sys.argv[1])
    for k in range(2, 16, 2):
        w.append([make_sample(i, 1500) for i in (k, k + 1)], skip_existing=True)
        print("batch", k, flush=True)
""")


def test_torn_write_is_never_visible(tmp_path):
    path = tmp_path / "torn.zarr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    TokenStoreWriter.create(path, StoreConfig(**SMALL)).append([make_sample(i, 1500) for i in range(2)])
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("batch")  # at least one more batch committed
    time.sleep(0.15)  # ...and kill somewhere inside a later one
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = TokenStore.open(path)
    n = len(st)
    assert n >= 4 and n % 2 == 0  # only whole batches are visible
    for i in range(n):
        np.testing.assert_array_equal(st.tokens(i), make_sample(i, 1500).tokens)
    validate_store(str(path))
    subprocess.run([sys.executable, str(script), str(path)], check=True, env=env, capture_output=True)
    st = TokenStore.open(path)
    assert len(st) == 16 and st.subject_ids() == [f"{i:03d}" for i in range(16)]
    for i in (0, n, 15):
        np.testing.assert_array_equal(st.tokens(i), make_sample(i, 1500).tokens)
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


def test_offsets_delimit_each_sample_exactly(tmp_path):
    """Format 1.2: ``offsets[i]:offsets[i + 1]`` (and ``point_offsets``) are exactly sample i's
    rows, also for the last sample of an append batch; no PAD is committed, so a whole-store
    read is the concatenation of the sequences and each slice re-appends as it was."""
    samples = [make_sample(i, n) for i, n in enumerate([300, 5000, 40, 2600, 7, 1200, 9000, 64])]
    path = tmp_path / "ds.zarr"
    w = TokenStoreWriter.create(path, StoreConfig(**SMALL))
    for a, b in ((0, 2), (2, 3), (3, 6), (6, 8)):  # batch ends inside shards, and a sample spanning shards
        w.append(samples[a:b])
    g = zarr.open_group(str(path), mode="r")  # plain zarr: the layout, not this package's reader
    off, poff = g["offsets"][:], g["point_offsets"][:]
    assert off[-1] == sum(len(s.tokens) for s in samples) and poff[-1] == sum(s.num_points for s in samples)
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(g["tokens"][off[i]:off[i + 1]], s.tokens)
        np.testing.assert_array_equal(g["points"][poff[i]:poff[i + 1]], s.points)
        np.testing.assert_array_equal(g["rotation"][poff[i]:poff[i + 1]], s.rotation)
    st = TokenStore.open(path)
    np.testing.assert_array_equal(st.read_all_tokens(), np.concatenate([s.tokens for s in samples]))
    # re-appending every slice to a new store round-trips
    w2 = TokenStoreWriter.create(tmp_path / "again.zarr", StoreConfig(**SMALL))
    for i in range(len(st)):
        item = st[i]
        sl = g["tokens"][off[i]:off[i + 1]]
        w2.append([type(samples[i])(item["subject_id"], sl, *(item[k] for k in ("points", "binding", "rgb", "opacity",
                                                                                 "scale", "rotation", "flame_shape",
                                                                                 "image")))])
    again = TokenStore.open(tmp_path / "again.zarr")
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(again.tokens(i), s.tokens)
        np.testing.assert_array_equal(again[i]["scale"], s.scale)
    assert validate_store(str(path))["tokens"] == off[-1]
