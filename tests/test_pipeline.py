"""The pipeline runner: resume after a killed worker, failure isolation, parallelism, S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest
from conftest import TINY

from pipelines.runner import run_pipeline
from pipelines.stages import STAGES, PipelineConfig
from pointillist_data.store.token_store import TokenStore, validate_store

GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def _cli(capture, out, participants, workers=1, extra=()):
    cfg = out.parent / f"{out.name}_config.json"
    cfg.write_text(json.dumps(TINY))
    return [sys.executable, "-m", "pipelines.cli", "run", "--capture", str(capture), "--out", str(out),
            "--participants", participants, "--landmarks", GT, "--workers", str(workers), "--config", str(cfg), *extra]


def _outputs(out, pid):
    recs = {s: json.loads((out / "work" / pid / s / "record.json").read_text()) for s in STAGES}
    return {s: r["outputs"] for s, r in recs.items()}


def test_killed_worker_then_rerun_matches_uninterrupted(tiny_capture, tmp_path):
    root, cfg = tiny_capture
    pid = f"{cfg.participants[0]:03d}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    ref = tmp_path / "ref"
    subprocess.run(_cli(root, ref, pid), check=True, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(root, out, pid), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec_path = out / "work" / pid / "fit" / "record.json"
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and proc.poll() is None:
        try:
            rec = json.loads(rec_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.2)
            continue
        if rec["status"] == "running":
            time.sleep(1.0)  # let it get into the stage
            os.kill(rec["worker_pid"], signal.SIGKILL)
            killed = rec["worker_pid"]
            break
    assert killed is not None, "never saw the fit stage running"
    proc.wait(timeout=600)
    r = subprocess.run(_cli(root, out, pid), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _outputs(out, pid) == _outputs(ref, pid)
    a, b = TokenStore.open(str(ref / "store.zarr")), TokenStore.open(str(out / "store.zarr"))
    np.testing.assert_array_equal(a.tokens(0), b.tokens(0))
    assert not list((out / "work" / pid / "fit").glob("*.tmp-*"))  # no half-written stage folder left


def test_corrupt_participant_fails_alone_and_workers_run_in_parallel(tiny_capture, tmp_path, monkeypatch):
    root, cfg = tiny_capture
    capture = tmp_path / "capture"
    shutil.copytree(root, capture)
    bad = cfg.participants[2]
    # a fault only the stage itself meets (the checks before any worker read calibrations and
    # video headers, not landmark files): one damaged landmark file of one participant
    damaged = sorted((capture / f"{bad:03d}" / "ground_truth").rglob("GT/*.npz"))[0]
    damaged.write_bytes(b"not an npz")
    out = tmp_path / "run"
    pc = PipelineConfig(capture=str(capture), out=str(out), participants=cfg.participants, landmarks=GT, **TINY)
    summary = run_pipeline(pc, workers=2)
    assert summary["failed"] == [f"{bad:03d}"]
    failed = next(s for s in summary["summaries"] if s["participant"] == f"{bad:03d}")
    assert failed["failed_stage"] == "landmarks" and damaged.name in failed["error"], failed["error"]
    rec = json.loads((out / "work" / f"{bad:03d}" / "landmarks" / "record.json").read_text())
    assert rec["status"] == "failed" and damaged.name in rec["error"] and "Traceback" in rec["traceback"]
    assert summary["shard"]["samples_in_store"] == 2
    validate_store(str(out / "store.zarr"))
    # the two good participants ran at the same time in different worker processes
    recs = [json.loads((out / "work" / f"{p:03d}" / "track" / "record.json").read_text()) for p in cfg.participants[:2]]
    assert recs[0]["worker_pid"] != recs[1]["worker_pid"]
    span = [(datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"])) for r in recs]
    assert span[0][0] <= span[1][1] and span[1][0] <= span[0][1]
    from typer.testing import CliRunner

    from pipelines.cli import app

    st = CliRunner().invoke(app, ["status", str(out)])
    assert st.exit_code == 0 and "failed" in st.output
    # both stores: two samples, and the supervision of the same two identities
    assert "store.zarr: 2 samples" in st.output, st.output  # the store lines keep their paths whole
    assert "supervision.zarr: 2 identities" in st.output and "not in it" not in st.output, st.output

    # a stage after tokenize failing (here supervise, in-process with its runner replaced) fails the
    # participant and keeps its tokenized sample for the token store
    import torch

    from pipelines import runner, stages

    def crash(*args, **kwargs):
        raise RuntimeError("supervision renderer crashed")

    monkeypatch.setitem(stages.RUNNERS, "supervise", crash)
    again = PipelineConfig(**{**pc.to_dict(), "store": str(tmp_path / "store2.zarr"), "force": ["supervise"]})
    mode = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        s = runner.run_participant(again.to_dict(), cfg.participants[0])
    finally:  # run_participant sets the process-wide mode
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
    assert s["status"] == "failed" and s["failed_stage"] == "supervise" and "renderer crashed" in s["error"]
    assert s["stages"]["tokenize"] == "skipped (complete)" and s["supervision"] is None and s["sample"]
    assert runner.shard_samples(again, [s])["samples_in_store"] == 1
    validate_store(str(tmp_path / "store2.zarr"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # the setting the README documents for MinIO / moto: botocore (so s3fs and zarr) reads it
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(k, v)
    import boto3
    import s3fs

    # fsspec caches filesystems by their arguments, not by AWS_ENDPOINT_URL: an instance made
    # against another test's (stopped) server must not be reused
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3").create_bucket(Bucket="pointillist")
    yield url
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def test_store_and_stage_outputs_on_s3(s3_server, tiny_capture, tmp_path):
    from store_samples import SMALL, make_sample

    from pointillist_data.store.write import StoreConfig, TokenStoreWriter

    w = TokenStoreWriter.create("s3://pointillist/ds.zarr", StoreConfig(**SMALL))
    samples = [make_sample(i, 700) for i in range(3)]
    w.append(samples[:2])
    TokenStoreWriter.open("s3://pointillist/ds.zarr").append(samples[2:])
    st = TokenStore.open("s3://pointillist/ds.zarr")
    assert len(st) == 3
    np.testing.assert_array_equal(st.tokens(2), samples[2].tokens)
    assert validate_store("s3://pointillist/ds.zarr")["samples"] == 3
    # a whole participant with its stage outputs and store on S3
    root, cfg = tiny_capture
    pc = PipelineConfig(capture=str(root), out="s3://pointillist/run", participants=cfg.participants[:1],
                        landmarks=GT, **TINY)
    from pipelines.runner import run_participant, shard_samples

    s = run_participant(pc.to_dict(), cfg.participants[0])
    assert s["status"] == "complete", s
    assert shard_samples(pc, [s])["samples_in_store"] == 1
    assert validate_store("s3://pointillist/run/store.zarr")["samples"] == 1
    import fsspec

    fs = fsspec.filesystem("s3")
    assert fs.exists(f"pointillist/run/work/{cfg.participants[0]:03d}/fit/record.json")
    again = run_participant(pc.to_dict(), cfg.participants[0])
    assert set(again["stages"].values()) == {"skipped (complete)"}
