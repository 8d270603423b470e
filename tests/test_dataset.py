"""The researcher's dataset (issue 18): provenance and quality per sample, the dataset card,
the map-style dataset and its collate, filtered views, and streaming reads (HTTP, S3)."""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.runner import run_participant, shard_samples
from pipelines.stages import STAGES, PipelineConfig
from pointillist_data.errors import InputError
from pointillist_data.store.datasets import SampleDataset, collate
from pointillist_data.store.loader import TokenWindowDataset
from pointillist_data.store.query import parse_where
from pointillist_data.store.token_store import POINT_ARRAYS, TokenStore, check_token_store, validate_store
from pointillist_data.store.write import Sample

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def _cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r


def _truncated(sample: Sample, k: int, subject: str) -> Sample:
    """The first ``k`` points of a sample (tokens stay sorted: a valid, smaller sample)."""
    t = sample.tokens
    toks = np.concatenate([t[:4], t[4:4 + 4 * k], t[-4:]])
    return Sample(subject, toks, *(np.asarray(getattr(sample, n))[:k] for n in POINT_ARRAYS), sample.flame_shape,
                  sample.image)


@pytest.fixture(scope="module")
def built(tiny_capture, tmp_path_factory):
    """One participant through `run`'s code path (stage records, then `shard_samples`) into a
    store; then a second, smaller sample (no stage records) appended with `pointillist shard`
    and a split manifest that holds it out as test."""
    root, cfg = tiny_capture
    d = tmp_path_factory.mktemp("dataset")
    pid = cfg.participants[0]
    second = "777"
    split = d / "split.json"
    split.write_text(json.dumps({"dataset": "synthetic", "seed": 0, "n_test": 1, "train": [f"{pid:03d}"],
                                 "test": [second]}))
    pc = PipelineConfig(capture=str(root), out=str(d / "run"), participants=[pid], landmarks=GT, split=str(split),
                        **TINY)
    t0 = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    summary = run_participant(pc.to_dict(), pid)
    assert summary["status"] == "complete", summary
    shard_samples(pc, [summary])
    store = Path(pc.store)
    card1 = {n: (store / n).read_bytes() for n in ("DATASET.md", "DATASET.png")}
    before = d / "before.zarr"
    shutil.copytree(store, before)
    s = Sample.load(summary["sample"])
    small = _truncated(s, s.num_points // 2, second)
    small.save(d / "small.npz")
    r = _cli("shard", d / "small.npz", "--out", store, "--split", split)
    assert r.exit_code == 0, r.output
    return {"d": d, "root": root, "cfg": cfg, "pid": pid, "store": store, "before": before, "card1": card1,
            "run": d / "run", "sample_file": Path(summary["sample"]), "t0": t0, "second": second}


def _records(run: Path, pid: int) -> dict[str, dict]:
    return {s: json.loads((run / "work" / f"{pid:03d}" / s / "record.json").read_text()) for s in STAGES}


def test_provenance_and_quality_match_the_stage_records(built, demo_asset):
    from pointillist_data.capture import NersembleSequence
    from pointillist_data.flame import FlameParams
    from pointillist_data.flame.demo_head import BUILDER_VERSION, DEMO_HEAD_NAME, bundled_flame_basis
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.tracking.stage import vertex_errors

    st = TokenStore.open(built["store"])
    e = st.entries()[0]
    recs = _records(built["run"], built["pid"])
    p, cfg = e["provenance"], built["cfg"]
    assert e["subject_id"] == p["subject_id"] == f"{built['pid']:03d}" and e["split"] == "train"
    assert p["sequences"] == [cfg.sequence]
    assert p["timesteps"] == [f"{t:05d}" for t in range(cfg.timesteps)]
    # the FLAME model's identity: the bundled head's name and version, the basis file's sha256
    assert p["flame"]["kind"] == "bundled" and p["flame"]["name"] == DEMO_HEAD_NAME
    assert p["flame"]["version"] == BUILDER_VERSION
    assert p["flame"]["basis_sha256"] == hashlib.sha256(bundled_flame_basis().read_bytes()).hexdigest()
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout  # noqa: E731
    assert p["code"] == {"package": "pointillist", "version": metadata.version("pointillist"),
                         "git_commit": git("rev-parse", "HEAD").strip() or None,
                         "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip())}
    assert {s: v["config_hash"] for s, v in p["stages"].items()} == {s: r["config_hash"] for s, r in recs.items()}
    created = datetime.datetime.fromisoformat(p["created"])
    assert built["t0"] <= created <= datetime.datetime.now(datetime.timezone.utc)
    # tracking: the figures of the track record ...
    tm, tr = recs["track"]["metrics"], p["tracking"]
    assert tr["landmark_error_px"] == tm["landmark_error_px_mean"] and tr["vertex_error_mm"] == tm["vertex_error_mm_mean"]
    assert tr["frames_tracked"] == tr["frames_total"] == cfg.timesteps
    # ... which are right: the vertex error against the capture's ground truth, recomputed here
    root, pid = built["root"], built["pid"]
    gt = FlameParams.load(root / f"{pid:03d}/ground_truth/{cfg.sequence}/flame_params.npz")
    tracked = FlameParams.load(find_tracked_params(recs["track"]["output_dir"]))
    assert tr["vertex_error_mm"] == pytest.approx(vertex_errors(demo_asset, tracked, gt).mean() * 1e3, rel=1e-9)
    # the inter-ocular distance (outer eye corners 36 / 45 of iBUG-68) from the landmark files
    seq = NersembleSequence(root, pid, cfg.sequence)
    iod = []
    for f in sorted((Path(recs["landmarks"]["output_dir"]) / cfg.sequence).glob("*.npz")):
        cam = seq.cameras[f.stem]
        lm = np.load(f)["face_landmark_2d"].astype(np.float64) * [cam.width, cam.height, 1]
        ok = (lm[:, 36, 2] > 0) & (lm[:, 45, 2] > 0)
        iod += list(np.linalg.norm(lm[ok, 36, :2] - lm[ok, 45, :2], axis=-1))
    assert tr["landmark_error_iod_pct"] == pytest.approx(100 * tm["landmark_error_px_mean"] / np.mean(iod), rel=1e-6)
    # fitting: the fit record's figures; the per-face histogram accounts for every face and Gaussian
    fm, fi = recs["fit"]["metrics"], p["fitting"]
    assert fi["psnr_heldout_db"] == fm["psnr_heldout_db"] and fi["ssim_heldout"] == fm["ssim_heldout"]
    assert fi["gaussians"] == fm["gaussians"] == e["points"] and fi["empty_faces"] == fm["empty_faces"]
    h = np.asarray(fi["per_face_histogram"])
    assert h.sum() == demo_asset.num_faces and (np.arange(len(h)) * h).sum() == fi["gaussians"] and h[0] == fi["empty_faces"]
    assert p["quality"]["psnr"] == fm["psnr_heldout_db"] and p["quality"]["vertex_mm"] == tm["vertex_error_mm_mean"]
    # the sample appended by `pointillist shard` without stage records: provenance, no figures
    e2 = st.entries()[1]
    assert e2["split"] == "test" and e2["provenance"]["tracking"] is None and e2["provenance"]["quality"]["psnr"] is None
    # `pointillist shard` of a run's own sample file finds its records: the same provenance
    r = _cli("shard", built["sample_file"], "--out", built["d"] / "resharded.zarr")
    assert r.exit_code == 0, r.output
    p2 = TokenStore.open(built["d"] / "resharded.zarr").entries()[0]["provenance"]
    assert {k: v for k, v in p2.items() if k != "created"} == {k: v for k, v in p.items() if k != "created"}


def test_provenance_and_card_are_checksummed(built, tmp_path):
    from pointillist_data.manifests import validate_manifest

    assert validate_store(built["store"])["samples"] == 2
    validate_manifest(json.loads((built["store"] / "manifest.json").read_text()), "dataset_manifest")
    for name, edit in (("manifest.json", lambda b: b.replace(b'"psnr": ', b'"psnr": 1')),
                       ("DATASET.md", lambda b: b + b"\nedited"), ("DATASET.png", lambda b: b[:-3])):
        p = tmp_path / name
        shutil.copytree(built["store"], p)
        f = p / name
        f.write_bytes(edit(f.read_bytes()))
        problems = [str(x) for x in check_token_store(p)["problems"]]
        assert len(problems) == 1 and name in problems[0], (name, problems)
        if name != "manifest.json":
            with pytest.raises(Exception, match=name):
                TokenStore.open(p).document(name)


def test_card_is_regenerated_after_an_append(built):
    st = TokenStore.open(built["store"])
    old, new = built["card1"], {n: st.document(n) for n in ("DATASET.md", "DATASET.png")}
    assert old["DATASET.md"] != new["DATASET.md"] and old["DATASET.png"] != new["DATASET.png"]
    text, pid = new["DATASET.md"].decode(), f"{built['pid']:03d}"
    assert "samples: 2 identities" in text and f"- test: 1 ({built['second']})" in text and "- train: 1" in text
    assert "samples: 1 identity " in old["DATASET.md"].decode()
    # the per-sample rows, licences and citation
    assert f"| 0 | {pid} | train | " in text and f"| 1 | {built['second']} | test | " in text
    assert "NeRSemble Terms of Use" in text and "CC-BY-4.0" in text and "@inproceedings{liu2026avatarpointillist" in text
    # licence terms follow each sample's capture: the run's sample comes from the synthetic
    # capture; the one sharded without stage records is assumed to be NeRSemble's
    entries = st.entries()
    assert entries[0]["provenance"]["capture"] == "synthetic" and entries[1]["provenance"]["capture"] is None
    assert "- **Synthetic captures** (1 sample(s)):" in text and "- **NeRSemble** (1 sample(s)):" in text
    assert "NeRSemble Terms" not in old["DATASET.md"].decode()  # the run's sample alone: synthetic terms only
    from PIL import Image

    assert Image.open(built["store"] / "DATASET.png").size[0] > 600
    # the card describes exactly the committed state: the same bytes as a card written now
    from pointillist_data.store.card import card_documents

    assert card_documents(dict(st.attrs), st.entries()) == new


def test_inspect_table_where_and_sort(built):
    r = _cli("inspect", built["store"], "--json", "--where", "psnr >= 0 and split == train", "--png",
             built["d"] / "i.png")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output[: r.output.rindex("}") + 1])["table"]
    assert [x["subject_id"] for x in rows] == [f"{built['pid']:03d}"]
    r = _cli("inspect", built["store"], "--json", "--sort", "points", "--png", built["d"] / "i.png")
    rows = json.loads(r.output[: r.output.rindex("}") + 1])["table"]
    assert [x["subject_id"] for x in rows] == [built["second"], f"{built['pid']:03d}"]
    assert rows[0]["points"] < rows[1]["points"] and rows[0]["psnr"] is None
    r = _cli("inspect", built["store"], "--where", "psnr >=", "--png", built["d"] / "i.png")
    assert r.exit_code == 2 and "--where" in r.output and "Traceback" not in r.output
    r = _cli("inspect", built["store"], "--where", "colour == red", "--png", built["d"] / "i.png")
    assert r.exit_code == 2 and "unknown field 'colour'" in r.output
    r = _cli("inspect", built["store"], "--where", "split == test", "--png", built["d"] / "i.png")
    assert r.exit_code == 0 and built["second"] in r.output and "1 match" in r.output
    (built["d"] / "bad_split.json").write_text('{"train": []}')
    r = _cli("shard", built["d"] / "small.npz", "--out", built["d"] / "x.zarr", "--split", built["d"] / "bad_split.json")
    assert r.exit_code == 2 and "--split" in r.output and not (built["d"] / "x.zarr").exists()


WHERE_CASES = [  # expression, the same predicate written in Python
    ("psnr >= 28", lambda r: r["psnr"] is not None and r["psnr"] >= 28),
    ("psnr>=28 and ssim < 0.9", lambda r: r["psnr"] is not None and r["psnr"] >= 28 and r["ssim"] is not None
     and r["ssim"] < 0.9),
    ("split == test or psnr > 30.5", lambda r: r["split"] == "test" or (r["psnr"] is not None and r["psnr"] > 30.5)),
    ("not (split = 'train') and points != 10", lambda r: not r["split"] == "train" and r["points"] != 10),
    ("psnr < -1e3 or not psnr >= 0", lambda r: (r["psnr"] is not None and r["psnr"] < -1e3)
     or not (r["psnr"] is not None and r["psnr"] >= 0)),
    ('subject_id == "003" or (points <= 20 and split != test)', lambda r: r["subject_id"] == "003"
     or (r["points"] <= 20 and r["split"] != "test")),
]


@pytest.mark.parametrize("expr,ref", WHERE_CASES, ids=[c[0] for c in WHERE_CASES])
def test_where_expressions_match_python(expr, ref):
    rng = np.random.default_rng(0)
    rows = [{"subject_id": f"{i:03d}", "split": ["train", "test"][i % 2], "points": int(rng.integers(5, 40)),
             "psnr": None if i % 5 == 0 else float(rng.uniform(20, 35)), "ssim": float(rng.uniform(0.7, 1))}
            for i in range(40)]
    pred = parse_where(expr, set(rows[0]))
    assert [pred(r) for r in rows] == [ref(r) for r in rows]


@pytest.mark.parametrize("bad", ["", "psnr >=", "psnr >= 28 and", "(psnr >= 1", "psnr 28", "__import__('os')",
                                 "psnr >= 1)", "split > train"])
def test_where_rejects_bad_expressions(bad):
    with pytest.raises(InputError):
        parse_where(bad, {"psnr", "split"})({"psnr": 3.0, "split": "train"})


def test_map_dataset_and_collate_round_trip(built):
    st = TokenStore.open(built["store"])
    ds = SampleDataset(built["store"])
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 2
    for workers in (0, 2):
        batches = list(DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate))
        assert len(batches) == 1
        b = batches[0]
        n = [int(st.point_count[i]) for i in range(2)]
        assert b["point_count"].tolist() == n and b["subject_id"] == st.subject_ids()
        assert b["points"].shape == (2, max(n), 3) and b["tokens"].shape == (2, 4 * max(n) + 8)
        for j in range(2):
            ref = st[j]
            T = 4 * n[j] + 8
            np.testing.assert_array_equal(b["tokens"][j, :T].numpy(), ref["tokens"].astype(np.int64))
            assert b["token_mask"][j].sum() == T and (b["tokens"][j, T:] == st.vocab.pad).all()
            assert b["point_mask"][j].sum() == n[j]
            for name in POINT_ARRAYS:
                np.testing.assert_array_equal(b[name][j, : n[j]].numpy(), ref[name])
                assert (b[name][j, n[j]:] == 0).all()
            np.testing.assert_array_equal(b["image"][j].numpy(), ref["image"])
            np.testing.assert_array_equal(b["flame_shape"][j].numpy(), ref["flame_shape"])
    # fewer fields read less; unknown ones are refused
    item = SampleDataset(built["store"], fields=["tokens"])[1]
    assert set(item) == {"index", "subject_id", "tokens"}
    with pytest.raises(InputError):
        SampleDataset(built["store"], fields=["colour"])


def test_views_filter_by_split_and_quality(built):
    pid, second = f"{built['pid']:03d}", built["second"]
    ds = SampleDataset(built["store"])
    psnr = ds.table[0]["psnr"]
    assert SampleDataset(built["store"], split="train").subject_ids == [pid]
    assert SampleDataset(built["store"], split="test").subject_ids == [second]
    assert ds.select(where=f"psnr >= {psnr - 0.01}").subject_ids == [pid]
    assert ds.select(where=f"psnr > {psnr + 0.01}").subject_ids == []
    assert ds.select(where="vertex_mm < 1000 or split == test").subject_ids == [pid, second]
    v = ds.select(split="test")
    assert len(v) == 1 and v[0]["subject_id"] == second and v.select(where="points > 0").indices.tolist() == [1]
    assert ds.select(indices=[1])[0]["index"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streaming_reads_over_http_and_s3(built, monkeypatch):
    from http_range import RangeHandler, serve

    local = TokenStore.open(built["store"])
    ref_windows = list(TokenWindowDataset(local, window=4000, shuffle=False, with_conditioning=True))
    with serve(built["store"].parent) as base:
        url = f"{base}/{built['store'].name}"
        st = TokenStore.open(url)
        assert len(st) == 2 and st.subject_ids() == local.subject_ids() and st.entries() == local.entries()
        assert st.document("DATASET.md") == local.document("DATASET.md")
        b = collate([SampleDataset(url)[k] for k in range(2)])
        np.testing.assert_array_equal(b["points"][0, : local.point_count[0]].numpy(), local[0]["points"])
        # unverified reads fetch byte ranges of shards
        before = RangeHandler.ranged
        np.testing.assert_array_equal(TokenStore.open(url, verify=False).tokens(1), local.tokens(1))
        assert RangeHandler.ranged > before
        assert validate_store(url)["samples"] == 2
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import fsspec

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # instances are cached by arguments, not by endpoint
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket="shards")
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.put(str(built["store"]), "shards/ds.zarr", recursive=True)
        st = TokenStore.open("s3://shards/ds.zarr")
        assert st.entries() == local.entries() and validate_store("s3://shards/ds.zarr")["samples"] == 2
        ds = TokenWindowDataset("s3://shards/ds.zarr", window=4000, shuffle=False, with_conditioning=True)
        got = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(got) == len(ref_windows)
        key = lambda w: (w["sample"], w["start"])  # noqa: E731
        for a, b in zip(sorted(got, key=key), sorted(ref_windows, key=key), strict=True):
            assert key(a) == key(b)
            for k in ("tokens", "loss_mask", "image", "flame_shape"):
                assert torch.equal(a[k], b[k])
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_run_outputs_follow_the_umask(built):
    """Every file a participant's run, the shard step and `pointillist shard` wrote (stage
    outputs, records, configs, the store, its card) has the mode the umask gives; none is the
    0600 of a temporary file renamed into place (issue 27: 69 of 405 demo outputs were)."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    files = [p for p in built["d"].rglob("*") if p.is_file()]
    assert len(files) > 50 and any(p.name == "record.json" for p in files) and any(p.suffix == ".npz" for p in files)
    wrong = {str(p.relative_to(built["d"])): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != want}
    assert not wrong, f"not {oct(want)} under umask {oct(umask)}: {wrong}"
