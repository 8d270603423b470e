"""Supervision stores: round trips (also through plain zarr), checksums, a crash at every
write of an append, the Dataset, and building one identity from the synthetic capture."""

from __future__ import annotations

import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import zarr
from test_store_recovery import Crash, crash_at, snapshot

from pointillist_data.capture.synthetic import make_rig
from pointillist_data.flame import FlameParams
from pointillist_data.store.check import check_store
from pointillist_data.store.supervision import (
    SupervisionSample,
    SupervisionStore,
    check_supervision_store,
    validate_supervision_store,
)
from pointillist_data.store.supervision_dataset import SupervisionDataset
from pointillist_data.store.supervision_write import SupervisionStoreConfig, SupervisionStoreWriter
from pointillist_data.store.token_store import ShardChecksumError, StoreError, StoreValidationError
from pointillist_data.store.write import DuplicateSubjectError

H, W, V = 16, 12, 50


def make_sample(sid: str, K: int, C: int, seed: int) -> SupervisionSample:
    rng = np.random.default_rng(seed)
    cams = make_rig(1 / 20, seed)[:C]
    cams = [c.resized(W, H) for c in cams]
    p = FlameParams(rotation=rng.normal(size=(K, 3)), translation=rng.normal(size=(K, 3)),
                    neck_pose=rng.normal(size=(K, 3)), jaw_pose=rng.normal(size=(K, 3)),
                    eyes_pose=rng.normal(size=(K, 6)), shape=rng.normal(size=300), expr=rng.normal(size=(K, 100)),
                    static_offset=rng.normal(size=(1, V, 3)) * 1e-3 if seed % 2 else None,
                    timestep_id=np.array([f"{3 * t:05d}" for t in range(K)]))
    return SupervisionSample(sid, rng.integers(0, 256, (K, C, H, W, 3), dtype=np.uint8),
                             rng.integers(0, 256, (K, C, H, W), dtype=np.uint8), np.stack([c.K for c in cams]),
                             np.stack([c.world_to_cam for c in cams]), np.asarray([c.serial for c in cams]), p,
                             rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
                             np.array([[0, 0], [K - 1, C - 1]], np.int32))


CFG = dict(image_size=(H, W), crop_size=(8, 8), crops_per_identity=2, num_vertices=V, views_per_shard=8,
           rows_per_shard=4)


@pytest.fixture
def store(tmp_path):
    samples = [make_sample("017", 3, 5, 0), make_sample("018", 2, 4, 1), make_sample("019", 4, 3, 2)]
    path = tmp_path / "sup.zarr"
    SupervisionStoreWriter.create(path, SupervisionStoreConfig(**CFG)).append(samples[:2])
    SupervisionStoreWriter.open(path).append(samples[2:])
    return path, samples


def test_round_trip_through_the_reader_and_plain_zarr(store):
    path, samples = store
    st = SupervisionStore.open(path)
    assert st.subject_ids() == ["017", "018", "019"]
    for i, s in enumerate(samples):
        got = st[i]
        np.testing.assert_array_equal(got.rgb, s.rgb)
        np.testing.assert_array_equal(got.mask, s.mask)
        np.testing.assert_allclose(got.intrinsics, s.intrinsics)
        np.testing.assert_allclose(got.world_to_cam, s.world_to_cam)
        for k in ("rotation", "translation", "neck_pose", "jaw_pose", "eyes_pose", "expr", "shape"):
            np.testing.assert_array_equal(getattr(got.params, k), getattr(s.params, k).astype(np.float32))
        np.testing.assert_array_equal(got.params.timestep_id, s.params.timestep_id)
        np.testing.assert_array_equal(got.crops, s.crops)
    # plain zarr, from the layout alone: views identity-major, then timestep, then camera
    g = zarr.open_group(str(path), mode="r")
    off, toff, coff, counts = (g[k][:] for k in ("offsets", "timestep_offsets", "camera_offsets", "counts"))
    assert len(off) == 4
    for i, s in enumerate(samples):
        K, C = counts[i]
        v0, t0, c0 = off[i], toff[i], coff[i]
        np.testing.assert_array_equal(g["rgb"][v0:v0 + K * C].reshape(K, C, H, W, 3), s.rgb)
        np.testing.assert_array_equal(g["mask"][v0:v0 + K * C].reshape(K, C, H, W), s.mask)
        np.testing.assert_array_equal(g["expr"][t0:t0 + K], s.params.expr.astype(np.float32))
        np.testing.assert_array_equal(g["eyes_pose"][t0:t0 + K], s.params.eyes_pose.astype(np.float32))
        assert [str(x) for x in g["timestep_id"][t0:t0 + K]] == list(s.params.timestep_id)
        np.testing.assert_allclose(g["world_to_cam"][c0:c0 + C], s.world_to_cam)
        np.testing.assert_allclose(g["intrinsics"][c0:c0 + C], s.intrinsics)
        so = s.params.static_offset
        np.testing.assert_array_equal(g["static_offset"][i], np.zeros((V, 3)) if so is None else so[0].astype(np.float32))
        np.testing.assert_array_equal(g["crops"][i], s.crops)
        assert [str(x) for x in g["serial"][c0:c0 + C]] == list(s.serials)
    assert dict(g.attrs)["store_type"] == "pointillist.supervision"
    v = validate_supervision_store(str(path))
    assert v["samples"] == 3 and v["views"] == sum(s.num_timesteps * s.num_cameras for s in samples)


def test_bad_input_and_corruption(store):
    path, samples = store
    w = SupervisionStoreWriter.open(path)
    with pytest.raises(DuplicateSubjectError, match="'018'"):
        w.append([samples[1]])
    bad = make_sample("020", 2, 2, 5)
    bad.rgb, bad.mask = bad.rgb[:, :, :-1], bad.mask[:, :, :-1]
    with pytest.raises(StoreError, match=r"\(15, 12\) images"):
        w.append([bad])
    assert len(SupervisionStore.open(path)) == 3 and check_supervision_store(path)["problems"] == []
    # a flipped byte in the views of the second batch: named on read and by validation
    v0 = int(SupervisionStore.open(path).offsets[2])
    key = f"rgb/c/{v0 // CFG['views_per_shard']}/0/0/0"
    shard = path / key
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardChecksumError, match=key):
        SupervisionStore.open(path).view(2, 0, 0)
    problems = check_supervision_store(path)["problems"]
    assert [str(p) for p in problems] == [f"{key}: corrupted (sha256 differs from manifest.json); samples affected: 2 "
                                          "(019)"]
    with pytest.raises(StoreValidationError, match="019"):
        validate_supervision_store(path)
    from typer.testing import CliRunner

    from pipelines.cli import app

    r = CliRunner().invoke(app, ["validate", str(path)])
    assert r.exit_code == 1 and f"{key}: corrupted" in r.output and "(019)" in r.output, r.output


def test_a_crash_mid_append_is_recovered_and_never_hides_a_commit(tmp_path, monkeypatch):
    """A crash at a storage write (the first, one in the middle, around the commit, the
    last) leaves the committed identities readable (checked reads), never hides a committed
    batch, and a re-run gives the uninterrupted store byte for byte. (The token store's
    tests crash at every write of the shared commit layer.)"""
    first, second = [make_sample("017", 3, 5, 0)], [make_sample("018", 2, 4, 1), make_sample("019", 4, 3, 2)]
    base = tmp_path / "base.zarr"
    SupervisionStoreWriter.create(base, SupervisionStoreConfig(**CFG)).append(first)
    ref = tmp_path / "ref.zarr"
    shutil.copytree(base, ref)
    with crash_at(monkeypatch, None) as writes:
        SupervisionStoreWriter.open(ref).append(second)
    want, n = snapshot(ref), len(writes)
    commit = max(i for i, w in enumerate(writes) if w.startswith("put offsets/")) + 1  # 1-based
    assert 1 < commit < n
    for k in sorted({1, n // 2, commit - 1, commit, commit + 1, n}):
        p = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, p)
        with crash_at(monkeypatch, k), pytest.raises(Crash):
            SupervisionStoreWriter.open(p).append(second)
        st = SupervisionStore.open(p)  # every read checked against the manifest
        assert len(st) == (3 if k > commit else 1), f"crash at write {k} ({writes[k - 1]})"
        for i, s in enumerate((first + second)[: len(st)]):
            np.testing.assert_array_equal(st[i].rgb, s.rgb)
            np.testing.assert_array_equal(st[i].params.expr, s.params.expr.astype(np.float32))
        assert SupervisionStoreWriter.open(p).append(first + second, skip_existing=True) == 3 - len(st)
        assert snapshot(p) == want, f"crash at write {k} ({writes[k - 1]})"
        assert check_store(SupervisionStore, p)[1] == []
        shutil.rmtree(p)


def test_dataset_items(store):
    path, samples = store
    ds = SupervisionDataset(str(path), background=1.0)
    assert len(ds) == sum(s.num_timesteps * s.num_cameras for s in samples)
    for idx in (0, 7, len(ds) - 1):
        i, k, c = ds.locate(idx)
        assert ds.flat_index(i, k, c) == idx
        item = ds[idx]
        s = samples[i]
        m = s.mask[k, c].astype(np.float32) / 255
        ref = s.rgb[k, c].astype(np.float32) / 255 * m[..., None] + (1 - m[..., None])
        np.testing.assert_allclose(item["rgb"].numpy(), ref, atol=1e-6)
        np.testing.assert_allclose(item["K"].numpy(), s.intrinsics[c], rtol=1e-6)
        np.testing.assert_allclose(item["flame"]["expr"].numpy(), s.params.expr[k], rtol=1e-6)
        assert item["subject_id"] == s.subject_id
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["rgb"].shape == (2, H, W, 3)


def test_build_from_the_synthetic_capture(synthetic_capture):
    from pointillist_data.capture.nersemble import ASSETS
    from pointillist_data.store.supervision_build import SupervisionConfig, build_supervision_sample

    root, cfg, summary = synthetic_capture
    pid = cfg.participants[0]
    gt = FlameParams.load(root / f"{pid:03d}/ground_truth/{cfg.sequence}/flame_params.npz")
    tracked = gt.frame(slice(1, 3))  # as if the tracker kept frames 1 and 2
    tracked.timestep_id = np.array(["00001", "00002"])
    s = build_supervision_sample(root, pid, cfg.sequence, tracked, SupervisionConfig(timesteps=2, crops=2, crop_size=40))
    w, h = summary["image_size"]
    assert s.rgb.shape == (2, 16, h, w, 3) and s.crops.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(s.params.expr, tracked.expr)
    serial = s.serials[3]
    video = np.asarray(iio.imread(root / ASSETS["images"].format(p_id=pid, seq_name=cfg.sequence, serial=serial),
                                  plugin="pyav"))
    np.testing.assert_array_equal(s.rgb[1, 3], video[2])  # frame 2 of the capture, at its own size
    # the masks separate the head from the background the capture rendered behind it
    alpha = np.load(root / f"{pid:03d}/ground_truth/{cfg.sequence}/alpha.npy").astype(np.float32)
    fg, bg = alpha[2, 3] > 0.9, alpha[2, 3] < 0.01
    assert (s.mask[1, 3][fg] == 255).mean() > 0.95 and (s.mask[1, 3][bg] == 0).mean() > 0.95
    # cameras: the capture's calibration, at the stored size
    from pointillist_data.capture import NersembleSequence

    seq = NersembleSequence(root, pid, cfg.sequence)
    np.testing.assert_allclose(s.intrinsics[3], seq.cameras[serial].K)
    # the crops come from the two most frontal cameras (as the token store's portrait)
    assert set(s.crop_source[:, 1]) == set(np.argsort(s.world_to_cam[:, 2, 2])[:2])


def test_supervise_stage_shards_and_the_cli_validates_and_inspects(synthetic_capture, tracked, demo_asset, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.stage_supervise import run_supervise, shard_supervision
    from pipelines.stages import STAGES, PipelineConfig
    from pointillist_data.flame.params import find_tracked_params

    root, cfg, _ = synthetic_capture
    track_out, rec, _, _ = tracked
    pid = cfg.participants[0]
    pc = PipelineConfig(capture=str(root), out=str(tmp_path / "run"), participants=[pid], sequences=[cfg.sequence],
                        supervision={"timesteps": 2, "crops": 2})
    assert STAGES[-1] == "supervise" and pc.supervision_store == str(tmp_path / "run" / "supervision.zarr")
    stage_dir = tmp_path / "supervise"
    stage_dir.mkdir()
    m = run_supervise(pc, pid, {"track": track_out}, stage_dir, demo_asset)
    assert m["timesteps"] == 2 and m["cameras"] == 16
    summaries = [{"participant": f"{pid:03d}", "supervision": str(stage_dir / "supervision.npz")}]
    assert shard_supervision(pc, summaries)["appended"] == 1
    assert shard_supervision(pc, summaries)["appended"] == 0  # a resumed run adds nothing twice
    st = SupervisionStore.open(pc.supervision_store)
    tracked_params = FlameParams.load(find_tracked_params(track_out))
    np.testing.assert_array_equal(st.params(0).shape, tracked_params.shape)
    assert st.crops(0)[0].shape == (2, pc.image_size, pc.image_size, 3)
    r = CliRunner().invoke(app, ["validate", pc.supervision_store])
    assert r.exit_code == 0 and "supervision store, 1 identities, 32 views" in r.output
    r = CliRunner().invoke(app, ["inspect", pc.supervision_store, "--png", str(tmp_path / "sup.png")])
    assert r.exit_code == 0 and (tmp_path / "sup.png").exists(), r.output


def test_downsized_masks_are_area_averaged_not_dilated(synthetic_capture):
    """A 0..255 mask resized to half size must keep the 2 x 2 block means (edges become
    partial), not turn every partial pixel into foreground (it was scaled by 255 twice)."""
    from PIL import Image

    from pointillist_data.capture import NersembleSequence
    from pointillist_data.store.supervision_build import SupervisionConfig, build_supervision_sample

    root, cfg, _ = synthetic_capture
    pid = cfg.participants[0]
    gt = FlameParams.load(root / f"{pid:03d}/ground_truth/{cfg.sequence}/flame_params.npz")
    tracked = gt.frame(slice(0, 1))
    tracked.timestep_id = np.array(["00000"])
    s = build_supervision_sample(root, pid, cfg.sequence, tracked,
                                 SupervisionConfig(timesteps=1, crops=1, crop_size=40, resolution=(55, 80)))
    seq = NersembleSequence(root, pid, cfg.sequence)
    full = seq.masks(s.serials[0], [0])[0].astype(np.float32)  # 110 x 160, 0 / 255
    want = np.asarray(Image.fromarray(full).resize((55, 80), Image.BOX))  # block means, 0..255
    got = s.mask[0, 0].astype(np.float32)
    assert np.abs(got - want).max() <= 1.0
    assert ((got > 0) & (got < 255)).sum() > 20  # the edge is partial, as the block means say
