"""The distributed paths on real processes: a dask scheduler with two dask workers running two
participants (two sequences each) through `run --scheduler`, and `torchrun` with two gloo
ranks training the AR model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from typer.testing import CliRunner

from pipelines.cli import app
from pointillist_data.capture.nersemble import ASSETS, SERIALS
from pointillist_data.capture.video import read_video, write_video

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
GT = "files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_sequences(root: Path, pids: list[int], seq: str, out: Path) -> Path:
    """Copy of the participants with a second sequence, EXP-2-eyes, playing ``seq`` backwards."""
    for pid in pids:
        shutil.copytree(root / f"{pid:03d}", out / f"{pid:03d}", ignore=shutil.ignore_patterns("*.png", "*.ply"))
        for s in SERIALS:
            v = read_video(root / ASSETS["images"].format(p_id=pid, seq_name=seq, serial=s))
            write_video(out / ASSETS["images"].format(p_id=pid, seq_name="EXP-2-eyes", serial=s), v[::-1])
            lm = np.load(root / f"{pid:03d}/ground_truth/{seq}/landmark2d/GT/{s}.npz")["face_landmark_2d"]
            d = out / f"{pid:03d}/ground_truth/EXP-2-eyes/landmark2d/GT"
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / f"{s}.npz", face_landmark_2d=lm[::-1])
    return out


def test_dask_scheduler_and_two_workers_run_two_participants(tiny_capture, tmp_path):
    from dask.distributed import Client

    from pointillist_data.store.token_store import TokenStore, validate_store

    root, cfg = tiny_capture
    pids = cfg.participants[:2]
    capture = _two_sequences(root, pids, cfg.sequence, tmp_path / "capture")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=_env(), stdout=subprocess.DEVNULL, stderr=(logs / "scheduler.log").open("w"))]
    try:
        time.sleep(1.0)
        procs += [subprocess.Popen([BIN / "dask", "worker", addr, "--nthreads", "1", "--nworkers", "1", "--host",
                                    "127.0.0.1", "--no-dashboard", "--name", f"w{i}"], env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=(logs / f"worker{i}.log").open("w"))
                   for i in range(2)]
        with Client(addr, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
            worker_pids = set(c.run(os.getpid).values())
        conf = tmp_path / "tiny.json"
        conf.write_text(json.dumps({**TINY, "fitting": {**TINY["fitting"], "iterations": 4}}))
        out = tmp_path / "run"
        r = CliRunner().invoke(app, ["run", "--capture", str(capture), "--out", str(out), "--participants",
                                     ",".join(map(str, pids)), "--landmarks", GT, "--scheduler", addr, "--config",
                                     str(conf), "--sequences", "all", "--cameras", "0,3,6,8,11,14"])
        assert r.exit_code == 0, r.output + "".join(p.read_text()[-3000:] for p in logs.iterdir())
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    # each participant ran in a worker process, not in the client, the two in different workers
    ran = {p: json.loads((out / "work" / f"{p:03d}" / "track" / "record.json").read_text()) for p in pids}
    assert {rec["worker_pid"] for rec in ran.values()} == worker_pids and os.getpid() not in worker_pids
    both = ["EXP-1-head", "EXP-2-eyes"]
    for p, rec in ran.items():
        assert rec["metrics"]["sequences"] == both and rec["metrics"]["frames_tracked"] == 4  # 2 + 2 timesteps
        fit = json.loads((out / "work" / f"{p:03d}" / "fit" / "record.json").read_text())
        assert fit["metrics"]["sequences"] == both and fit["metrics"]["timesteps"] == 4  # the union
        export = Path(rec["output_dir"]) / "export" / "transforms.json"
        assert len(json.loads(export.read_text())["camera_indices"]) == 6
    assert validate_store(str(out / "store.zarr"))["samples"] == 2
    st = TokenStore.open(str(out / "store.zarr"))
    assert [s["sequences"] for s in st.manifest.extra["samples"]] == [both, both]


def _tiny_store(path: Path) -> Path:
    """Five samples whose sequences are whole 64-token windows (4N + 8 = 64, 128, 192): eight
    full windows, so every rank's batch holds as many tokens and the DDP loss is the global one."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_store import SMALL, make_sample

    from pointillist_data.store.write import StoreConfig, TokenStoreWriter

    w = TokenStoreWriter.create(path, StoreConfig(**SMALL))
    w.append([make_sample(i, n) for i, n in enumerate([14, 30, 46, 14, 14])])
    return path


def test_torchrun_two_ranks_train_on_disjoint_windows_with_the_global_loss(tmp_path, demo_asset):
    from pointillist_model.train import TrainConfig, Trainer

    store = _tiny_store(tmp_path / "ds.zarr")
    conf = {"steps": 4, "window": 64, "log_every": 1, "warmup": 1, "lr": 3e-3, "ckpt_every": 1000}
    (tmp_path / "train.json").write_text(json.dumps(conf))
    ddp = tmp_path / "ddp"
    r = subprocess.run([BIN / "torchrun", "--standalone", "--nproc_per_node", "2", BIN / "pointillist", "train-ar",
                        "--store", str(store), "--out", str(ddp), "--batch-size", "2", "--config",
                        str(tmp_path / "train.json")], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert text.count("final loss") == 1 and text.count("training (tiny preset): started") == 1  # rank 0 only
    # rank 0 alone wrote the shared files (its loss curve too: no torn or doubled picture)
    written = sorted(p.name for p in ddp.iterdir() if p.name != "tensorboard")
    assert written == ["checkpoint.pt", "log.jsonl", "loss_curve.png", "train_config.json"]
    log = [json.loads(x) for x in (ddp / "log.jsonl").read_text().splitlines()]
    single = Trainer(TrainConfig(store=str(store), out=str(tmp_path / "one"), batch_size=4, **conf), demo_asset).train()
    assert len(log) == len(single) == 4
    for a, b in zip(log, single, strict=True):
        r0, r1 = ({tuple(w) for w in ws} for ws in a["windows"])
        assert len(r0) == len(r1) == 2 and not r0 & r1  # each rank its own windows
        assert r0 | r1 == {tuple(w) for w in b["windows"][0]}  # together the single process's batch
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    epoch = [{tuple(w) for s in log[:2] for w in s["windows"][k]} for k in (0, 1)]
    assert len(epoch[0] | epoch[1]) == 8 and not epoch[0] & epoch[1]  # an epoch: all 8 windows, split
