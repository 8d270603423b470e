"""DataLoader memory with 0 / 2 / 4 workers, and streaming from S3 (moto) vs the local disk.

Over a 64-sample store (NeRSemble-like: ~27.5k points, 110k tokens and a 128x128 portrait per
subject) with conditioning on (``flame_shape`` and ``image`` per window):

* peak memory of the whole loader (the main process and its workers) during one epoch of
  12000-token windows, as the sum of PSS (proportional set size: a page shared by k
  processes counts 1/k in each, so the sum is the memory the loader really holds) and, for
  reference, the sum of RSS (which counts shared pages once per process). Each worker count
  runs in a fresh interpreter. Target: the 4-worker PSS at most 1.5x the 0-worker one.
* time to the first batch and windows/s of one epoch from a local disk and from S3 (a moto
  server on 127.0.0.1, so network latency is loopback's; a real bucket is slower to start).

Writes ``benchmarks/dataset_memory.png`` (the README's figure).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, threading, time
import psutil, torch
from torch.utils.data import DataLoader
from pointillist_data.store.loader import TokenWindowDataset
url, workers = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
me = psutil.Process()
peak = {"pss": 0, "rss": 0}
stop = threading.Event()

def mem():
    pss = rss = 0
    for p in [me] + me.children(recursive=True):
        try:
            m = p.memory_full_info()
            pss += m.pss
            rss += m.rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pss, rss

def poll():
    while not stop.is_set():
        pss, rss = mem()
        peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
        time.sleep(0.02)

ds = TokenWindowDataset(url, window=12000, seed=0, with_conditioning=True, batch_size=8)
base = mem()
threading.Thread(target=poll, daemon=True).start()
t0 = time.perf_counter()
first, n = None, 0
for b in DataLoader(ds, batch_size=8, num_workers=workers, persistent_workers=False):
    if first is None:
        first = time.perf_counter() - t0
    n += len(b["tokens"])
total = time.perf_counter() - t0
stop.set()
time.sleep(0.05)
print(json.dumps({"workers": workers, "windows": n, "first_batch_s": first, "windows_per_s": n / total,
                  "peak_pss_MB": peak["pss"] / 2**20, "peak_rss_MB": peak["rss"] / 2**20,
                  "start_pss_MB": base[0] / 2**20}))
"""


def _child(url: str, workers: int, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, url, str(workers)], capture_output=True, text=True, env=env,
                       timeout=900)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _figure(mem: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    w = [m["workers"] for m in mem]
    ax.plot(w, [m["peak_pss_MB"] for m in mem], "o-", label="sum of PSS (memory held)")
    ax.plot(w, [m["peak_rss_MB"] for m in mem], "s--", label="sum of RSS (shared pages counted per process)")
    ax.axhline(1.5 * mem[0]["peak_pss_MB"], color="grey", lw=0.8, ls=":", label="1.5x the 0-worker PSS (target)")
    ax.set_xlabel("DataLoader workers")
    ax.set_ylabel("peak MB (main + workers)")
    ax.set_xticks(w)
    ax.set_title("64-sample store, 12000-token windows, conditioning on")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run() -> dict:
    from benchmarks.bench_store import _samples
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter

    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POINTILLIST_CACHE": str(tmp / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    try:
        store = tmp / "bench.zarr"
        w = TokenStoreWriter.create(store, StoreConfig())
        samples = _samples(64, 27500)
        for k in range(0, 64, 16):
            w.append(samples[k:k + 16])
        mem = [_child(str(store), n, env) for n in (0, 2, 4)]
        out: dict = {"samples": 64, "memory": mem,
                     "pss_4_over_0_workers": round(mem[2]["peak_pss_MB"] / mem[0]["peak_pss_MB"], 3),
                     "target_pss_4_over_0_max": 1.5}
        _figure(mem, Path(__file__).resolve().parent / "dataset_memory.png")
        # streaming: S3 through a local moto server vs the local disk, 2 workers
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
        try:
            s3env = {**env, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
            os.environ.update({k: v for k, v in s3env.items() if k.startswith("AWS_")})
            import boto3
            import fsspec

            boto3.client("s3").create_bucket(Bucket="bench")
            fsspec.filesystem("s3", skip_instance_cache=True).put(str(store), "bench/bench.zarr", recursive=True)
            local = _child(str(store), 2, env)
            s3 = _child("s3://bench/bench.zarr", 2, s3env)
        finally:
            server.stop()
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
                os.environ.pop(k, None)
        pick = lambda r: {k: round(r[k], 3) for k in ("first_batch_s", "windows_per_s")}  # noqa: E731
        out["streaming_2_workers"] = {"local_disk": pick(local), "s3_moto": pick(s3), "windows": local["windows"]}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
