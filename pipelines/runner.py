"""The dataset runner: every participant's stage graph in parallel with dask, then sharding.

* Resumable: a stage whose record says complete with the same input hash (inputs' checksums
  plus its config) and whose output folder exists is skipped; ``force`` redoes a stage and
  everything after it.
* Isolated: a participant that fails records the error and traceback in the failing
  stage's record and is reported; the others continue; the run exits non-zero.
* Parallel: a ``dask.distributed`` LocalCluster (one single-threaded worker process per core
  by default, one GPU per worker when GPUs exist) or an existing scheduler address.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import os
import time
import traceback
from pathlib import Path
from typing import Any

from pointillist_data.manifests import config_hash, file_sha256

from .stages import RUNNERS, STAGE_OUTPUTS, STAGES, PipelineConfig, stage_config
from .workspace import Workspace

__all__ = ["run_participant", "run_pipeline", "shard_samples", "capture_hash", "participant_status"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def capture_hash(cfg: PipelineConfig, pid: int) -> str:
    """Hash of a participant's raw inputs: calibration contents, and each video's and
    background's name and size (hashing gigabytes of video on every run would cost more
    than it protects)."""
    root = Path(cfg.capture) / f"{pid:03d}"
    h = hashlib.sha256(cfg.sequence.encode())
    for p in sorted(root.glob("calibration/*.json")):
        h.update(p.name.encode() + p.read_bytes())
    for p in sorted(list((root / "sequences" / cfg.sequence).rglob("*.mp4")) + list(root.glob("sequences/BACKGROUND/*"))):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    if cfg.landmarks.startswith("files:"):
        folder = cfg.landmarks[len("files:"):].format(capture=cfg.capture, pid=f"{pid:03d}", sequence=cfg.sequence)
        for p in sorted(Path(folder).glob("*.npz")):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _checksums(folder: Path, patterns: list[str]) -> dict[str, str]:
    out = {}
    for pat in patterns:
        for p in sorted(glob.glob(str(folder / pat))):
            out[os.path.relpath(p, folder)] = file_sha256(p)
    return out


def run_participant(cfg_dict: dict[str, Any], pid: int, until: str | None = None, threads: int | None = None) -> dict:
    """Run one participant's stages (in a dask worker or in-process); never raises.

    Returns:
        ``{"participant", "status" (complete / failed), "stages": {stage: status},
        "error", "failed_stage"}``.
    """
    import torch

    from pointillist_data.flame import resolve_flame_asset

    if threads:
        torch.set_num_threads(threads)
    cfg = PipelineConfig(**cfg_dict)
    # Multi-threaded CPU scatter / index accumulation is order-dependent; the deterministic
    # kernels make a resumed run reproduce an uninterrupted one exactly.
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    ws = Workspace(cfg.out)
    summary: dict[str, Any] = {"participant": f"{pid:03d}", "status": "complete", "stages": {}, "error": None,
                               "failed_stage": None}
    try:
        asset = resolve_flame_asset(cfg.flame)
        prev = capture_hash(cfg, pid)
    except Exception as e:  # bad FLAME file or unreadable capture: the first stage fails
        rec = {"stage": STAGES[0], "participant": f"{pid:03d}", "status": "failed", "inputs": {"capture": cfg.capture},
               "config_hash": "", "outputs": {}, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
               "started": _now(), "finished": _now()}
        ws.write_record(pid, STAGES[0], rec)
        return {**summary, "status": "failed", "error": rec["error"], "failed_stage": STAGES[0]}
    inputs: dict[str, Path] = {}
    forced = False
    for stage in STAGES:
        conf = stage_config(cfg, stage)
        chash = config_hash(conf)
        in_hash = config_hash({"inputs": prev, "config": chash, "stage": stage})
        key = in_hash
        forced = forced or stage in cfg.force
        rec = ws.read_record(pid, stage)
        if (not forced and rec and rec.get("status") == "complete" and rec.get("input_hash") == in_hash
                and ws.exists(pid, stage, key)):
            inputs[stage] = ws.materialize(pid, stage, key)
            prev = config_hash(rec["outputs"])
            summary["stages"][stage] = "skipped (complete)"
        else:
            started = _now()
            base = {"stage": stage, "participant": f"{pid:03d}", "inputs": {k: str(v) for k, v in inputs.items()},
                    "input_hash": in_hash, "config": conf, "config_hash": chash, "started": started,
                    "worker_pid": os.getpid(), "output_dir": ws.stage_dir(pid, stage, key)}
            ws.write_record(pid, stage, {**base, "status": "running", "outputs": {}, "finished": None})
            t0 = time.perf_counter()
            try:
                tmp = ws.new_tmp(pid, stage, key)
                metrics = RUNNERS[stage](cfg, pid, inputs, tmp, asset)
                outputs = _checksums(tmp, STAGE_OUTPUTS[stage])
                inputs[stage] = ws.publish(tmp, pid, stage, key)
            except Exception as e:
                ws.write_record(pid, stage, {**base, "status": "failed", "outputs": {}, "error": f"{type(e).__name__}: {e}",
                                             "traceback": traceback.format_exc(), "finished": _now(),
                                             "timings": {"wall_s": round(time.perf_counter() - t0, 2)}})
                summary.update(status="failed", error=f"{type(e).__name__}: {e}", failed_stage=stage)
                summary["stages"][stage] = "failed"
                return summary
            ws.write_record(pid, stage, {**base, "status": "complete", "outputs": outputs, "metrics": metrics,
                                         "error": None, "traceback": None, "finished": _now(),
                                         "timings": {"wall_s": round(time.perf_counter() - t0, 2)}})
            prev = config_hash(outputs)
            summary["stages"][stage] = "complete"
        if stage == until:
            break
    summary["sample"] = str(inputs["tokenize"] / "sample.npz") if "tokenize" in inputs else None
    summary["supervision"] = str(inputs["supervise"] / "supervision.npz") if "supervise" in inputs else None
    return summary


def shard_samples(cfg: PipelineConfig, summaries: list[dict]) -> dict:
    """Append the tokenized samples of the successful participants (in id order) to the store."""
    import zarr

    from pointillist_data.canonical import CANONICAL_PARAMS
    from pointillist_data.store import StoreError
    from pointillist_data.store_write import Sample, StoreConfig, TokenStoreWriter

    paths = [s["sample"] for s in sorted(summaries, key=lambda s: s["participant"]) if s.get("sample")]
    samples = [Sample.load(p) for p in paths]
    if not samples:
        return {"appended": 0, "store": cfg.store}
    try:
        w = TokenStoreWriter.open(cfg.store)
    except (StoreError, FileNotFoundError, zarr.errors.GroupNotFoundError):  # no store yet
        from pointillist_data.flame import resolve_flame_asset
        from pointillist_data.tokens import Vocabulary

        h, wd = samples[0].image.shape[:2]
        vocab = Vocabulary(num_faces=resolve_flame_asset(cfg.flame).num_faces)
        w = TokenStoreWriter.create(cfg.store, StoreConfig(vocab=vocab, canonical=CANONICAL_PARAMS, image_size=(h, wd),
                                                           tokens_per_shard=cfg.tokens_per_shard,
                                                           tokens_per_chunk=min(1 << 19, cfg.tokens_per_shard)))
    n = w.append(samples, skip_existing=True)
    return {"appended": n, "store": cfg.store, "samples_in_store": w.num_samples}


def _gpu_plugin():
    from dask.distributed import WorkerPlugin

    class OneGpuPerWorker(WorkerPlugin):
        """Pin each local worker to one GPU (by its index) before torch touches CUDA."""

        def setup(self, worker):  # pragma: no cover - needs GPUs
            import torch

            n = torch.cuda.device_count()
            if n:
                idx = int(str(worker.name).split("-")[-1]) if str(worker.name).split("-")[-1].isdigit() else 0
                torch.cuda.set_device(idx % n)

    return OneGpuPerWorker()


def run_pipeline(cfg: PipelineConfig, workers: int | None = None, scheduler: str | None = None,
                 until: str | None = None, progress=None) -> dict:
    """Run every participant (in parallel) and shard the results; returns the run summary.

    Args:
        workers: local worker processes (default: one per core, at most one per participant).
        scheduler: address of an existing dask scheduler (then ``workers`` is ignored).
        until: stop each participant after this stage (no sharding unless it is the last).
        progress: called with each participant's summary as it finishes.
    """
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    cores = os.cpu_count() or 1
    n = workers or min(cores, len(cfg.participants))
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # dask's default worker environment sets MALLOC_TRIM_THRESHOLD_, which turns off
        # glibc's dynamic mmap threshold: every large temporary of the renderer then goes
        # through mmap / munmap and the stages run about 3x slower. Keep glibc's default.
        env = {"OMP_NUM_THREADS": max(1, cores // n), "MKL_NUM_THREADS": max(1, cores // n)}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        client.register_plugin(_gpu_plugin())
    threads = max(1, cores // n)
    t0 = time.perf_counter()
    try:
        futures = [client.submit(run_participant, cfg.to_dict(), pid, until, threads, key=f"participant-{pid:03d}",
                                 pure=False) for pid in cfg.participants]
        summaries = []
        for fut in as_completed(futures):
            try:
                s = fut.result()
            except Exception as e:  # the worker died (killed, out of memory) more often than allowed
                s = {"participant": fut.key.split("-")[-1], "status": "failed", "error": f"worker lost: {e}",
                     "failed_stage": None, "stages": {}}
            summaries.append(s)
            if progress:
                progress(s)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    reached = STAGES.index(until) if until else len(STAGES) - 1
    shard = (shard_samples(cfg, summaries) if reached >= STAGES.index("tokenize")
             else {"appended": 0, "store": cfg.store})
    out = {"summaries": sorted(summaries, key=lambda s: s["participant"]), "shard": shard,
            "wall_s": round(time.perf_counter() - t0, 1), "failed": [s["participant"] for s in summaries
                                                                      if s["status"] != "complete"]}
    if reached >= STAGES.index("supervise"):  # decoder supervision, beside the token store
        from .stage_supervise import shard_supervision

        out["supervision"] = shard_supervision(cfg, summaries)
    return out


def participant_status(out: str) -> dict[str, dict[str, dict]]:
    """Records of every participant and stage under ``out`` (see :class:`Workspace`)."""
    return Workspace(out).records()
