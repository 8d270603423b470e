"""Ctrl-C on ``pointillist run``: stop the local dask cluster quietly and record the interrupt.

A terminal sends SIGINT to every process of the foreground group, the dask worker processes
included; left alone, each worker dies inside tornado (a ``NameError`` traceback), its
nanny logs "Worker process still alive ... killing", multiprocessing reports leaked
semaphores, and the stage it ran keeps a ``running`` record whose process is gone, which
``status`` cannot tell from an out-of-memory kill. Instead the workers ignore SIGINT (the
driver decides), and on an interrupt the driver kills its own worker processes by id, closes
the cluster with dask's logging silenced, and rewrites each stage record those workers left
``running`` as ``interrupted``. Stage outputs are published by a rename and the fit and the
tracker checkpoint periodically (:mod:`pointillist_data.checkpoint`), so re-running the
same command continues where the run stopped.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .workspace import subject_key

__all__ = ["INTERRUPTED", "children_ignore_sigint", "ignore_sigint_plugin", "stop_local_cluster", "record_interrupted"]

INTERRUPTED = "by Ctrl-C (SIGINT); re-run the same command to resume"  # status shows "interrupted: <this>"


@contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Ignore SIGINT while the block runs: processes spawned in it (the LocalCluster's
    workers) inherit the ignored disposition across ``exec``, and Python keeps it. A Ctrl-C
    within the block (the seconds the cluster takes to start) is lost.

    Also starts multiprocessing's resource tracker (when not yet running) without its
    "leaked semaphore objects" warning: after an interrupt the killed workers' semaphores are
    unlinked by the tracker all the same, and the warning would only be noise."""
    from multiprocessing import resource_tracker

    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    sys.warnoptions.append(quiet)  # the tracker is started with the interpreter's -W options
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(quiet)
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def ignore_sigint_plugin():
    """A dask WorkerPlugin that makes a worker process ignore SIGINT (a worker a nanny
    restarts after a crash is spawned outside :func:`children_ignore_sigint`)."""
    from dask.distributed import WorkerPlugin

    class IgnoreSigint(WorkerPlugin):
        name = "pointillist-ignore-sigint"

        def setup(self, worker):
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except ValueError:  # setup ran outside the main thread: the spawn-time disposition stays
                pass

    return IgnoreSigint()


def _worker_pids(cluster) -> set[int]:
    pids = set()
    for w in list(getattr(cluster, "workers", {}).values()):
        proc = getattr(w, "process", None)
        pid = getattr(proc, "pid", None) if proc is not None else None
        if pid:
            pids.add(int(pid))
    return pids


def stop_local_cluster(client, cluster) -> set[int]:
    """After an interrupt: kill the LocalCluster's worker processes (by their ids), close the
    client and cluster with dask's loggers silenced; returns the killed process ids. With an
    existing scheduler (``cluster is None``) only the client is closed: the tasks already
    running on that cluster's workers run on (dask cannot stop a running task)."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    pids = _worker_pids(cluster) if cluster is not None else set()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    except Exception:  # a worker already gone makes the close noisy, never wrong
        pass
    return pids


def record_interrupted(ws, participants: list[int], stages: list[str], pids: set[int]) -> list[tuple[str, str]]:
    """Rewrite each ``running`` stage record of this host whose worker is one of ``pids`` as
    ``interrupted``; returns the ``(participant, stage)`` pairs rewritten."""
    host = socket.gethostname()
    done = []
    for pid in participants:
        for stage in stages:
            rec = ws.read_record(pid, stage)
            if not rec or rec.get("status") != "running" or rec.get("host") not in (None, host) \
                    or rec.get("worker_pid") not in pids:
                continue
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            ws.write_record(pid, stage, {**rec, "status": "interrupted", "error": INTERRUPTED, "finished": now})
            done.append((subject_key(pid), stage))
    return done
