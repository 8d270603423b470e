"""Source images drawn from captured views (issue 30 item 5): several timesteps and frontal
cameras of each training identity, never a held-out timestep nor a test identity, the same
draws for the same seed, recorded in the checkpoint.

The world: a token store of three identities (``000`` and ``001`` train, ``002`` test) and a
supervision store whose every view is one flat colour encoding ``(identity, timestep,
camera)``, so each conditioning image says by itself which view it was cut from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from store_samples import SMALL, make_sample

from pointillist_data.capture.synthetic import make_rig
from pointillist_data.errors import InputError
from pointillist_data.flame import FlameParams
from pointillist_data.store.loader import TokenWindowDataset
from pointillist_data.store.source_images import SourceImages, UnselectedIdentityError
from pointillist_data.store.supervision import SupervisionSample
from pointillist_data.store.supervision_write import SupervisionStoreConfig, SupervisionStoreWriter
from pointillist_data.store.write import StoreConfig, TokenStoreWriter

H, W, K, C, S = 16, 12, 4, 5, 16  # view size, timesteps, cameras, portrait side
IDS = ("000", "001", "002")
SPLIT = {"000": "train", "001": "train", "002": "test"}


def colour(i: int, k: int, c: int) -> np.ndarray:
    return np.array([40 * i + 10, 30 * k + 5, 25 * c + 5], np.uint8)


def decode(img: np.ndarray) -> tuple[int, int, int]:
    """``(identity, timestep, camera)`` of a flat view colour (checking that it is flat)."""
    assert (img == img[0, 0]).all()
    r, g, b = (int(x) for x in img[0, 0])
    return (r - 10) // 40, (g - 5) // 30, (b - 5) // 25


def sup_sample(i: int, sid: str) -> SupervisionSample:
    cams = [c.resized(W, H) for c in make_rig(1 / 20, 0)[:C]]
    rgb = np.stack([np.stack([np.broadcast_to(colour(i, k, c), (H, W, 3)) for c in range(C)]) for k in range(K)])
    z = np.zeros((K, 3))
    p = FlameParams(rotation=z, translation=z, neck_pose=z, jaw_pose=z, eyes_pose=np.zeros((K, 6)), shape=np.zeros(300),
                    expr=np.zeros((K, 100)), timestep_id=np.array([f"{5 * k:05d}" for k in range(K)]))
    return SupervisionSample(sid, rgb, np.full((K, C, H, W), 255, np.uint8), np.stack([c.K for c in cams]),
                             np.stack([c.world_to_cam for c in cams]), np.asarray([c.serial for c in cams]), p,
                             rgb[:1, 0, :8, :8], np.array([[0, 0]], np.int32))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    # portrait of identity i: flat 7 * i; FLAME shape zero (the demo head's neutral)
    samples = [dataclasses.replace(make_sample(i, 60), image=np.full((S, S, 3), 7 * i, np.uint8),
                                   flame_shape=np.zeros(300, np.float32)) for i in range(len(IDS))]
    store = root / "store.zarr"
    TokenStoreWriter.create(store, StoreConfig(**{**SMALL, "image_size": (S, S)})).append(
        samples, annotations={s: {"split": SPLIT[s]} for s in IDS})
    sup = root / "supervision.zarr"
    SupervisionStoreWriter.create(sup, SupervisionStoreConfig(image_size=(H, W), crop_size=(8, 8), crops_per_identity=1,
                                                              num_vertices=50, views_per_shard=8, rows_per_shard=4)
                                  ).append([sup_sample(i, s) for i, s in enumerate(IDS)])
    w2c = np.stack([c.world_to_cam for c in make_rig(1 / 20, 0)[:C]])
    frontal = [int(c) for c in np.argsort(w2c[:, 2, 2])[:3]]  # optical axis closest to world -z
    return {"store": str(store), "supervision": str(sup), "frontal": frontal}


def test_draws_span_frontal_cameras_and_timesteps_but_never_the_held_out_ones(world):
    src = SourceImages(world["supervision"], ["000", "001"], S, cameras=3, holdout=1, seed=4)
    assert src.candidates["000"].tolist() == [[k, c] for k in range(K - 1) for c in world["frontal"]]
    assert src.heldout["001"].tolist() == [[K - 1, c] for c in world["frontal"]]
    seen = set()
    for key in range(120):
        sid = IDS[key % 2]
        img, (k, c) = src.draw(sid, (0, key))
        assert img.shape == (S, S, 3) and img.dtype == np.uint8
        assert decode(img) == (IDS.index(sid), k, c)  # the image is the view reported
        seen.add((k, c))
    assert {k for k, _ in seen} == {0, 1, 2} and {c for _, c in seen} == set(world["frontal"])  # K - 1: held out
    again = SourceImages(world["supervision"], ["000", "001"], S, cameras=3, holdout=1, seed=4)
    other = SourceImages(world["supervision"], ["000", "001"], S, cameras=3, holdout=1, seed=5)
    draws = [src.draw("000", (1, j))[1] for j in range(20)]
    assert draws == [again.draw("000", (1, j))[1] for j in range(20)]
    assert draws != [other.draw("000", (1, j))[1] for j in range(20)]
    rec = src.record()
    assert set(rec["identities"]) == {"000", "001"}
    assert rec["identities"]["000"]["heldout"][0][0] == f"{5 * (K - 1):05d}"  # the capture frame id
    assert all(t != f"{5 * (K - 1):05d}" for t, _ in rec["identities"]["000"]["train"])
    with pytest.raises(UnselectedIdentityError, match="'002'"):
        src.draw("002", (0, 0))
    two = SourceImages(world["supervision"], ["000"], S, frames=2, cameras=1, holdout=2)
    assert two.candidates["000"].tolist() == [[0, world["frontal"][0]], [1, world["frontal"][0]]]
    with pytest.raises(InputError, match="holding out 4 leaves none"):
        SourceImages(world["supervision"], ["000"], S, holdout=K)
    with pytest.raises(InputError, match=r"no supervision for identities \['007'\]"):
        SourceImages(world["supervision"], ["000", "007"], S)


def test_the_loader_draws_by_epoch_and_window_and_refuses_a_leaked_identity(world):
    src = SourceImages(world["supervision"], ["000", "001"], S, seed=0)

    def stream(ds):
        return [(int(b["sample"]), tuple(b["source"].tolist()), decode(b["image"].numpy())) for b in ds]

    ds = TokenWindowDataset(world["store"], window=32, stride=32, with_conditioning=True, split="train",
                            source_images=src)
    first = stream(ds)
    assert {s for s, _, _ in first} == {0, 1} and len({kc for _, kc, _ in first}) > 1
    assert all(d == (s, *kc) for s, kc, d in first)  # identity, timestep and camera of each window's image
    assert stream(ds) == first  # the same epoch draws the same views
    ds.consumed = 5  # a resume mid-epoch continues the same draws
    assert stream(ds) == first[5:]
    ds.set_epoch(1)
    assert [kc for _, kc, _ in stream(ds)] != [kc for _, kc, _ in first]  # another epoch, other views
    with pytest.raises(ValueError, match="does not cover"):
        TokenWindowDataset(world["store"], window=32, with_conditioning=True, split="all", source_images=src)
    # fault injection: a window of the test identity slipped into the training windows
    ds.set_epoch(0)
    ds.windows = np.concatenate([ds.windows, [[2, 0]]])
    ds.shuffle = False
    with pytest.raises(UnselectedIdentityError, match="'002'"):
        stream(ds)


def test_train_ar_conditions_on_drawn_views_and_records_the_held_out_frames(world, demo_asset, tmp_path):
    from pointillist_model.train import TrainConfig, Trainer
    from pointillist_model.trainer_base import load_checkpoint

    base = dict(store=world["store"], preset="tiny", window=64, stride=64, batch_size=2, steps=2, lr=1e-3, warmup=1,
                ckpt_every=2, log_every=1, source_images="views", seed=3)
    assert TrainConfig(out="x", **base).supervision.endswith("supervision.zarr")
    with pytest.raises(ValueError, match="source_images must be one of"):
        TrainConfig(out="x", **{**base, "source_images": "frames"})
    tr = Trainer(TrainConfig(out=str(tmp_path / "a"), **base), demo_asset)
    log = tr.train()
    wins = [w for rec in log for w in rec["windows"][0]]
    assert {w[0] for w in wins} == {0, 1} and all(len(w) == 4 and w[2] != K - 1 for w in wins)
    again = Trainer(TrainConfig(out=str(tmp_path / "b"), **base), demo_asset)  # reproducible by seed
    b = next(iter(again.dataset.loader()))
    assert [[int(x), int(y), *kc] for x, y, kc in zip(b["sample"], b["start"], b["source"].tolist(), strict=True)] \
        == log[0]["windows"][0]
    ck = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    rec = ck["source_images"]
    assert rec["mode"] == "views" and set(rec["identities"]) == {"000", "001"}  # never the test identity
    assert all(h[0] == f"{5 * (K - 1):05d}" for s in rec["identities"].values() for h in s["heldout"])
    assert ck["portrait_size"] == S
    check_source_frame_report(world, ck, tr, demo_asset)
    # the default: the store's portrait of each identity, and the record says so
    tr = Trainer(TrainConfig(out=str(tmp_path / "p"), **{**base, "source_images": "portrait"}), demo_asset)
    batch = next(iter(tr.dataset))
    assert "source" not in batch
    assert torch.equal(batch["image"], torch.full((S, S, 3), 7 * int(batch["sample"]), dtype=torch.uint8))
    assert tr.extra_state()["source_images"] == {"mode": "portrait"}


def check_source_frame_report(world, ck, tr, demo_asset):
    """The report of the model just trained: the held-out frame is the one recorded, the NLL is
    the training loss's over the same windows, and generation runs with either image."""
    from pointillist_data.store.loader import window_starts
    from pointillist_data.store.token_store import TokenStore
    from pointillist_model.ar import next_token_loss
    from pointillist_model.source_eval import chamfer_mm, source_frame_report

    rep = source_frame_report(ck, world["store"], world["supervision"], demo_asset, window=64, generate=1,
                              max_points=8, seed=1)
    rows = {r["subject_id"]: r for r in rep["rows"]}
    assert list(rows) == list(IDS) and [r["trained"] for r in rows.values()] == [True, True, False]
    front = make_rig(1 / 20, 0)[world["frontal"][0]].serial
    assert all(r["heldout_view"] == [f"{5 * (K - 1):05d}", front] for r in rows.values())
    assert rep["sources"] == ["last timestep", "recorded"]  # 002 was not trained: the store's last timestep
    st = TokenStore.open(world["store"])
    seq = torch.as_tensor(st.tokens(0).astype(np.int64))
    starts = window_starts(len(seq), 64, 64)
    assert rows["000"]["tokens"] == len(seq) - len(starts)  # the first token of each window is context
    win = torch.full((len(starts), 64), st.vocab.pad)
    mask = torch.zeros((len(starts), 64), dtype=torch.bool)
    for j, s0 in enumerate(starts):
        part = seq[s0:s0 + 64]
        win[j, :len(part)], mask[j, :len(part)] = part, True
    model = tr.model.eval()
    with torch.no_grad():
        for name, img in (("portrait", np.full((S, S, 3), 0, np.uint8)),
                          ("heldout", np.broadcast_to(colour(0, K - 1, world["frontal"][0]), (S, S, 3)).copy())):
            ctx = model.context(torch.as_tensor(img)[None], tr.flame_vertices[:1])
            ref = next_token_loss(model(win, ctx.expand(len(starts), -1, -1)), win, mask)
            assert rows["000"][f"nll_{name}"] == pytest.approx(float(ref), rel=1e-4)
    assert rows["000"]["nll_portrait"] != rows["000"]["nll_heldout"]
    assert all(r["points_portrait"] <= 8 and r["points_true"] == 60 for r in rows.values())
    assert chamfer_mm(np.zeros((1, 3)), np.array([[0.001, 0, 0], [0.003, 0, 0]])) == pytest.approx(1.5)
