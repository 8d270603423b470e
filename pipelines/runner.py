"""The dataset runner: every participant's stage graph in parallel with dask, then sharding.

* Checked first: configuration, ``--out``, ``--store``, the FLAME model and every
  participant's inputs (folder, calibration, video headers) are checked before any
  participant starts (:func:`check_run`), every problem listed at once, so a typo fails in
  a second, not after hours.
* Resumable: a stage whose record says complete with the same input hash (the content
  sha256 of its inputs plus its config) and whose output folder exists is skipped;
  ``force`` redoes a stage and everything after it. Raw inputs are hashed by content, the
  hashes cached by (path, size, mtime) in ``work/<pid>/input_hashes.json``.
* Isolated: a participant that fails records the error and traceback in the failing
  stage's record and is reported; the others continue; the run exits non-zero. A record
  says which host and process ran it, so ``status`` tells a stage still running from one
  whose worker was killed, and on which ``device`` with which budget (``preset``: ``cpu``
  or ``cuda``, see :func:`pipelines.stages.stage_plans`) it ran.
* Parallel: a ``dask.distributed`` LocalCluster (one single-threaded worker process per core
  by default, one GPU per worker when GPUs exist) or an existing scheduler address.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from pointillist_data.errors import InputError, InputProblems, PointillistError
from pointillist_data.fileio import build_config
from pointillist_data.manifests import HashCache, config_hash, file_sha256

from .importers import imported_key
from .interrupts import children_ignore_sigint, ignore_sigint_plugin, record_interrupted, stop_local_cluster
from .peak_memory import PeakRss
from .stage_supervise import supervision_config
from .stages import (
    CHECKPOINTED,
    RUNNERS,
    STAGE_OUTPUTS,
    STAGES,
    PipelineConfig,
    resolve_sequences,
    stage_config,
    stage_plans,
)
from .stages_monocular import VIDEO_RUNNERS, VIDEO_STAGES, video_hash
from .workspace import Workspace, subject_key

__all__ = ["run_participant", "run_pipeline", "shard_samples", "capture_hash", "participant_status", "check_run",
           "record_state", "store_status"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def capture_hash(cfg: PipelineConfig, pid: int, cache: HashCache | None = None) -> str:
    """Hash of a participant's raw inputs: the names of the selected sequences and the
    content sha256 of its calibration, every video of those sequences (images and alpha
    maps), the backgrounds and the landmark files (with ``files:`` landmarks), with their names.

    Args:
        cache: content hashes cached by (path, size, mtime); a re-run reads only changed files.

    Raises:
        OSError: an unreadable input file; InputError: no sequence matches the selection.
    """
    cache = cache or HashCache()
    if cfg.videos is not None:  # a video identity: its file (and landmark file)
        return video_hash(cfg, pid, cache)
    root = Path(cfg.capture) / f"{pid:03d}"
    seqs = resolve_sequences(cfg.capture, pid, cfg.selection())
    h = hashlib.sha256(",".join(seqs).encode())
    files = sorted(root.glob("calibration/*.json"))
    files += sorted([p for s in seqs for p in (root / "sequences" / s).rglob("*.mp4")]
                    + list(root.glob("sequences/BACKGROUND/*")))
    if cfg.landmarks.startswith("files:"):
        for s in seqs:
            folder = cfg.landmarks[len("files:"):].format(capture=cfg.capture, pid=f"{pid:03d}", sequence=s)
            files += sorted(Path(folder).glob("*.npz"))
    for p in files:
        h.update(f"{os.path.relpath(p, root)}:{cache.sha256(p)}".encode())
    return h.hexdigest()[:16]


def _process_started(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid`` on this host, ``None`` when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def record_state(rec: dict) -> tuple[str, str]:
    """``(state, detail)`` of a stage record: its status, except that a ``running`` record
    whose process is gone (checked when it ran on this host: pid and start time) is
    ``interrupted``."""
    status = rec.get("status", "?")
    if status != "running":
        return status, rec.get("error") or ""
    pid, host = rec.get("worker_pid"), rec.get("host")
    if pid is None or host not in (None, socket.gethostname()):
        return "running", f"on {host}" if host else ""
    started = _process_started(int(pid))
    want = rec.get("worker_started")
    if started is None or (want is not None and abs(started - float(want)) > 1.0):
        return "interrupted", f"worker process {pid} is gone (killed or out of memory)"
    return "running", f"process {pid}"


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
        "error", "failed_stage", "sample", "supervision"}``; ``sample`` / ``supervision``: the
        ``sample.npz`` / ``supervision.npz`` the tokenize / supervise stage produced, or ``None``
        (a failure in a later stage keeps an earlier stage's output: the token store gets the
        sample of a participant whose supervise stage failed).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    cfg = PipelineConfig(**cfg_dict)
    # Multi-threaded CPU scatter / index accumulation is order-dependent; the deterministic
    # kernels make a resumed run reproduce an uninterrupted one exactly.
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    ws = Workspace(cfg.out)
    summary: dict[str, Any] = {"participant": subject_key(pid), "status": "complete", "stages": {}, "error": None,
                               "failed_stage": None, "sample": None, "supervision": None}
    try:
        return _run_stages(cfg, ws, pid, until, summary)
    except Exception as e:  # even the failure could not be recorded (an unwritable --out)
        return {**summary, "status": "failed", "error": f"{type(e).__name__}: {e}",
                "failed_stage": summary.get("failed_stage")}


def _run_stages(cfg: PipelineConfig, ws: Workspace, pid: int, until: str | None, summary: dict) -> dict:
    from pointillist_data.flame import resolve_flame_asset

    me = {"host": socket.gethostname(), "worker_pid": os.getpid(), "worker_started": _process_started(os.getpid())}
    try:
        asset = resolve_flame_asset(cfg.flame)
        plans = stage_plans(cfg)  # which device and budget each stage runs with, for its record
        cache = HashCache((ws.read_json(f"work/{subject_key(pid)}/input_hashes.json") or {}).get("files"))
        prev = capture_hash(cfg, pid, cache)
        if cache.hashed:
            ws.write_json(f"work/{subject_key(pid)}/input_hashes.json", {"files": cache.to_dict()})
    except Exception as e:  # bad FLAME file or unreadable capture: the first stage fails
        rec = {"stage": STAGES[0], "participant": subject_key(pid), "status": "failed", "inputs": {"capture": cfg.capture},
               "config_hash": "", "outputs": {}, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
               "started": _now(), "finished": _now(), **me}
        ws.write_record(pid, STAGES[0], rec)
        return {**summary, "status": "failed", "error": rec["error"], "failed_stage": STAGES[0]}
    inputs: dict[str, Path] = {}
    forced = False
    runners = VIDEO_RUNNERS if cfg.videos is not None else RUNNERS  # same records, keys and resumption
    for stage in VIDEO_STAGES if cfg.videos is not None else STAGES:
        try:
            conf = stage_config(cfg, stage)
        except Exception as e:  # a bad override (check_run catches it before a run starts)
            err = f"--config: {type(e).__name__}: {e}"
            ws.write_record(pid, stage, {"stage": stage, "participant": subject_key(pid), "status": "failed", "inputs": {},
                                         "config_hash": "", "outputs": {}, "error": err, "traceback": None,
                                         "started": _now(), "finished": _now(), **me})
            summary.update(status="failed", error=err, failed_stage=stage)
            summary["stages"][stage] = "failed"
            break
        chash = config_hash(conf)
        in_hash = config_hash({"inputs": prev, "config": chash, "stage": stage})
        key = in_hash
        forced = forced or stage in cfg.force
        rec = ws.read_record(pid, stage)
        # outputs imported from another tool (pipelines.importers) have no input hash to match
        imported = None if forced else imported_key(ws, pid, stage, rec)
        if imported or (not forced and rec and rec.get("status") == "complete" and rec.get("input_hash") == in_hash
                        and ws.exists(pid, stage, key)):
            inputs[stage] = ws.materialize(pid, stage, imported or key)
            prev = config_hash(rec["outputs"])
            summary["stages"][stage] = "skipped (imported)" if imported else "skipped (complete)"
        else:
            started = _now()
            base = {"stage": stage, "participant": subject_key(pid), "inputs": {k: str(v) for k, v in inputs.items()},
                    "input_hash": in_hash, "config": conf, "config_hash": chash, "started": started,
                    "output_dir": ws.stage_dir(pid, stage, key), **plans[stage], **me}
            ws.write_record(pid, stage, {**base, "status": "running", "outputs": {}, "finished": None})
            t0 = time.perf_counter()
            rss = PeakRss()
            try:
                tmp = ws.new_tmp(pid, stage, key)
                # beside the attempt's folder, keyed like the outputs: the next attempt resumes from it
                ck = {"checkpoint": ws.checkpoint_dir(pid, stage, key)} if stage in CHECKPOINTED else {}
                with rss:
                    metrics = runners[stage](cfg, pid, inputs, tmp, asset, **ck)
                outputs = _checksums(tmp, STAGE_OUTPUTS[stage])
                inputs[stage] = ws.publish(tmp, pid, stage, key)
            except Exception as e:
                ws.write_record(pid, stage, {**base, "status": "failed", "outputs": {}, "error": f"{type(e).__name__}: {e}",
                                             "traceback": traceback.format_exc(), "finished": _now(),
                                             "timings": {"wall_s": round(time.perf_counter() - t0, 2),
                                                         "peak_rss_mb": rss.mb}})
                summary.update(status="failed", error=f"{type(e).__name__}: {e}", failed_stage=stage)
                summary["stages"][stage] = "failed"
                break
            ws.write_record(pid, stage, {**base, "status": "complete", "outputs": outputs, "metrics": metrics,
                                         "error": None, "traceback": None, "finished": _now(),
                                         "timings": {"wall_s": round(time.perf_counter() - t0, 2),
                                                     "peak_rss_mb": rss.mb}})
            prev = config_hash(outputs)
            summary["stages"][stage] = "complete"
        if stage == until:
            break
    # what the completed stages produced counts even when a later stage failed: a participant whose
    # supervise stage fails is reported failed, and its tokenized sample still goes to the token store
    summary["sample"] = str(inputs["tokenize"] / "sample.npz") if "tokenize" in inputs else None
    summary["supervision"] = str(inputs["supervise"] / "supervision.npz") if "supervise" in inputs else None
    return summary


def shard_samples(cfg: PipelineConfig, summaries: list[dict], progress=None) -> dict:
    """Append the tokenized samples of the participants that reached them (in id order; a
    participant whose later stage failed included) to the store (created, or re-created after
    an interrupted creation, when needed)."""
    from pointillist_data.flame import resolve_flame_asset

    from .stages import shard_stage

    done = [s for s in sorted(summaries, key=lambda s: s["participant"]) if s.get("sample")]
    if not done:
        return {"appended": 0, "store": cfg.store}
    ws = Workspace(cfg.out)  # the provenance of each sample: its stage records
    ids = {subject_key(p): p for p in cfg.participants}
    records = {s["participant"]: {st: ws.read_record(ids[s["participant"]], st) for st in STAGES} for s in done}
    split = read_split(cfg.split) if getattr(cfg, "split", None) else None
    return shard_stage([s["sample"] for s in done], cfg.store, resolve_flame_asset(cfg.flame).num_faces,
                       tokens_per_shard=cfg.tokens_per_shard, progress=progress, records=records, split=split,
                       flame=cfg.flame)


def read_split(path: str) -> dict:
    """A split manifest (``pointillist split``), validated.

    Raises:
        InputError: unreadable or not a split.
    """
    from pointillist_data.fileio import read_json_object
    from pointillist_data.manifests import validate_manifest

    try:
        d = read_json_object(path)
        validate_manifest(d, "split")
    except Exception as e:  # unreadable JSON or a schema violation
        raise InputError(f"--split {path}", f"not a split manifest ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return d


def check_run(cfg: PipelineConfig, until: str | None = None) -> None:
    """Check what a run needs before any participant starts: the capture folder, the stage
    configurations, a writable ``--out``, every participant's inputs (folder, calibration,
    every selected video: :func:`pointillist_data.capture.check.capture_problems`), the FLAME
    model, and (when the run shards) a ``--store`` that is absent, an interrupted creation,
    or a token store with this FLAME model's vocabulary. Every check runs, so one attempt
    names every problem it can find.

    Raises:
        InputError: the one problem found, naming the option (``--capture``, ``--config``,
            ``--out``, ``--store``) or file.
        InputProblems: several problems, every one listed (one line each).
        PointillistError: an unreadable FLAME model (from :func:`resolve_flame_asset`).
    """
    from pointillist_data.fitting.config import FittingConfig
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.tracking.config import TrackingConfig

    if cfg.videos is None and not Path(cfg.capture).is_dir():
        raise InputError(f"--capture {cfg.capture}", "not a folder")
    problems: list[PointillistError] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except PointillistError as e:
            problems.append(e)
            return None

    for section, cls in (("tracking", TrackingConfig), ("fitting", FittingConfig)):
        attempt(build_config, cls, getattr(cfg, section), f"--config '{section}'")
    attempt(stage_plans, cfg)  # a CUDA device asked for where torch sees none
    attempt(supervision_config, cfg)  # the supervise stage's overrides
    attempt(lambda: Workspace(cfg.out).check_writable())
    if cfg.split:
        attempt(read_split, cfg.split)
    if cfg.videos is None:  # a video's problems are its stages' (an undecodable file fails its landmarks)
        problems += _capture_problems(cfg, masks=until != "landmarks")
    else:
        from pointillist_data.capture.matting import check_specs

        from .stages_monocular import video_matting

        specs = []
        for pid in cfg.participants:
            attempt(video_hash, cfg, pid)  # a missing landmark file
            specs += [m[0] for m in [attempt(video_matting, cfg, pid)] if m]  # a plate a method needs
        problems += [InputError("--matting", line) for line in check_specs(specs)[1]]  # missing weights
    asset = attempt(resolve_flame_asset, cfg.flame)
    if asset is not None and (until is None or STAGES.index(until) >= STAGES.index("tokenize")):
        if until is None or until == "supervise":
            attempt(_check_supervision_store, cfg.supervision_store)
        attempt(_check_token_store, cfg.store, asset)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        lines = [str(e).strip().splitlines()[0] + (f" ({e.hint})" if e.hint else "") for e in problems]
        raise InputProblems("pointillist run", lines, "nothing ran; fix them and run the same command again")


def _capture_problems(cfg: PipelineConfig, masks: bool) -> list[InputError]:
    """:func:`~pointillist_data.capture.check.capture_problems` of every participant of the run
    (the stages of an imported participant read its capture too: hashes, portrait, views)."""
    from pointillist_data.capture.check import capture_problems
    from pointillist_data.capture.matting import check_specs

    sel = cfg.selection()
    run_matting = getattr(cfg, "matting", None) or "threshold"
    plate, bad = check_specs([cfg.tracking.get("matting") or run_matting, cfg.supervision.get("matting") or run_matting])
    out = [InputError("--matting", line) for line in bad] if masks else []
    for pid in cfg.participants:
        for line in capture_problems(cfg.capture, pid, sel, masks and plate):  # plates only when a method needs them
            where, _, what = line.partition(": ")
            out.append(InputError(where, what))
    return out


def _check_token_store(store: str, asset) -> None:
    """A run's token store must be absent (with a writable parent folder), an interrupted
    creation, or an appendable token store with ``asset``'s vocabulary."""
    from pointillist_data.store.commit import store_state
    from pointillist_data.store.token_store import TokenStore
    from pointillist_data.tokens import Vocabulary

    where = f"--store {store}"
    state = store_state(store)
    if state == "foreign":
        p = Path(store)
        what = "is a file, not a store folder" if "://" not in store and p.is_file() else \
            "exists and holds no token store"
        raise InputError(where, what, "choose a new path, or the folder of a token store")
    if state == "store":
        st = TokenStore.open(store, verify=False)
        want = Vocabulary(num_faces=asset.num_faces)
        if st.manifest.legacy:
            raise InputError(where, f"a format {st.attrs.get('format_version')} store cannot be appended to",
                             "shard into a new store (older stores stay readable)")
        if st.vocab != want:
            raise InputError(where, f"holds vocabulary {st.vocab}, this FLAME model needs {want}")
    elif "://" not in store:  # a store is to be created: its folder must be writable
        parent = Path(store).resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            probe = parent / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise InputError(where, f"cannot create it ({e.strerror or e})") from None


def _check_supervision_store(url: str) -> None:
    """A run's supervision store must be absent, an interrupted creation or a supervision store."""
    from pointillist_data.store.commit import store_state
    from pointillist_data.store.supervision import is_supervision_store

    state = store_state(url)
    if state == "foreign" or (state == "store" and not is_supervision_store(url)):
        raise InputError(f"supervision_store {url}", "holds something that is no supervision store",
                         "choose a new path (PipelineConfig.supervision_store)")


def store_status(store: str, kind: str = "token") -> dict[str, Any]:
    """``{"state", "samples", "subjects", "detail"}`` of a run's token (``kind="token"``) or
    supervision store (``"supervision"``) for ``status``: state is ``absent``, ``incomplete``
    (an interrupted creation), ``store``, ``foreign`` (something else is there) or
    ``unreadable``."""
    from pointillist_data.store.commit import store_state
    from pointillist_data.store.supervision import SupervisionStore, is_supervision_store
    from pointillist_data.store.token_store import TokenStore

    try:
        state = store_state(store)
        if state != "store":
            return {"state": state, "samples": 0, "subjects": [], "detail": ""}
        if is_supervision_store(store) != (kind == "supervision"):
            return {"state": "foreign", "samples": 0, "subjects": [], "detail": ""}
        st = SupervisionStore.open(store) if kind == "supervision" else TokenStore.open(store)
        return {"state": "store", "samples": len(st), "subjects": st.subject_ids(), "detail": ""}
    except Exception as e:  # a damaged store: status reports it, validate details it
        return {"state": "unreadable", "samples": 0, "subjects": [], "detail": f"{type(e).__name__}: {e}"}


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
                 until: str | None = None, progress=None, monitor=None, poll_s: float = 1.0) -> dict:
    """Run every participant (in parallel) and shard the results; returns the run summary.

    Args:
        workers: local worker processes (default: one per core, at most one per participant).
        scheduler: address of an existing dask scheduler (then ``workers`` is ignored).
        until: stop each participant after this stage (no sharding unless it is the last).
        progress: called with each participant's summary as it finishes.
        monitor: called about every ``poll_s`` seconds while participants run (e.g. to show a
            live participant x stage table from the stage records).

    Raises:
        InputError and other domain errors: from :func:`check_run`, before anything runs.
        KeyboardInterrupt: Ctrl-C; the local workers are stopped first and the stages they
            ran recorded ``interrupted`` (:mod:`pipelines.interrupts`).
    """
    import dask
    from dask.distributed import Client, KilledWorker, LocalCluster, wait

    from pointillist_data.logs import distributed_log_level

    check_run(cfg, until)
    ws = Workspace(cfg.out)
    # the stores inside the run folder are recorded relative to it: a copied folder uses its own
    ws.write_json("run_config.json", {**cfg.to_dict(), "store": ws.portable(cfg.store),
                                      "supervision_store": ws.portable(cfg.supervision_store)})
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
        # the driver handles Ctrl-C (pipelines.interrupts): the workers ignore SIGINT
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), children_ignore_sigint():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=distributed_log_level())  # nanny / port notices: --verbose
        client = Client(cluster)
        client.register_plugin(_gpu_plugin())
        client.register_plugin(ignore_sigint_plugin())
    threads = max(1, cores // n)
    t0 = time.perf_counter()
    try:
        futures = [client.submit(run_participant, cfg.to_dict(), pid, until, threads,
                                 key=f"participant-{subject_key(pid)}",
                                 pure=False) for pid in cfg.participants]
        summaries = []
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=poll_s, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished within poll_s: refresh the monitor
                done = set()
            for fut in done:
                try:
                    s = fut.result()
                except KilledWorker as e:  # the worker died (killed, out of memory) more often than allowed
                    s = {"participant": fut.key[len("participant-"):], "status": "failed", "failed_stage": None,
                         "stages": {}, "error": f"worker lost: its process died (killed, or out of memory) on every "
                                                f"try ({e})"}
                except Exception as e:  # run_participant never raises: a bug, or a transfer error; say what
                    s = {"participant": fut.key[len("participant-"):], "status": "failed", "failed_stage": None,
                         "stages": {}, "error": f"{type(e).__name__}: {e}"}
                summaries.append(s)
                if progress:
                    progress(s)
            if monitor:
                monitor()
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, say so in the records, let the caller report it
        killed = stop_local_cluster(client, cluster)
        client = cluster = None
        record_interrupted(ws, cfg.participants, STAGES, killed)
        raise
    finally:
        if client is not None:
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
