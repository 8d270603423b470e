"""Third-party log noise, kept off the terminal unless the user asks for it.

MediaPipe's native code (TFLite, absl C++ logging) writes lines such as
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU`` and
``W0000 00:00:1796649293.02 23829 inference_feedback_manager.cc:114] ...`` straight to file
descriptor 2, which no Python logging setting reaches; dask's ``distributed`` logs worker
start-up, port and nanny warnings (``Worker process still alive after 4.0 seconds, killing``).
None of them says anything a user of ``pointillist`` can act on. :func:`quiet_third_party`
lowers the Python loggers and sets the environment variables that the worker processes
inherit; :func:`filtered_native_stderr` drops the native lines around MediaPipe calls.
``POINTILLIST_VERBOSE=1`` (``pointillist --verbose``) keeps everything.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["verbose_enabled", "quiet_third_party", "distributed_log_level", "filtered_native_stderr", "NOISE"]

#: Lines of third-party native and library logging that ``pointillist`` hides: absl / glog
#: records (``W0000 00:00:...``, ``I1207 13:14:58.1 ...``), TFLite's delegate notice and absl's
#: pre-initialisation warning, and ``distributed`` logging records.
NOISE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d[.\d]* +\d+ [\w./-]+:\d+\]"
                   r"|INFO: Created TensorFlow Lite"
                   r"|WARNING: All log messages before absl::InitializeLog"
                   r"|\S+ \S+ - distributed\.[\w.]+ - (?:INFO|WARNING|DEBUG) - )")
_TRUE = ("1", "true", "yes")


def verbose_enabled() -> bool:
    """True when ``POINTILLIST_VERBOSE`` is set to a true value (``pointillist --verbose``)."""
    return os.environ.get("POINTILLIST_VERBOSE", "").lower() in _TRUE


def quiet_third_party(verbose: bool | None = None) -> None:
    """Silence third-party logging in this process and in the worker processes it starts
    (they inherit the environment), unless ``verbose`` (default: :func:`verbose_enabled`).

    Sets ``POINTILLIST_VERBOSE`` to match, so that workers filter MediaPipe's native lines the
    same way; ``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` (native glog / TensorFlow
    logging of older MediaPipe builds) and ``DASK_LOGGING__DISTRIBUTED`` (read when
    ``distributed`` is imported) only where the user has not set them.
    """
    verbose = verbose_enabled() if verbose is None else verbose
    os.environ["POINTILLIST_VERBOSE"] = "1" if verbose else "0"
    if verbose:
        return
    for var, value in (("GLOG_minloglevel", "2"), ("TF_CPP_MIN_LOG_LEVEL", "2"), ("DASK_LOGGING__DISTRIBUTED", "error")):
        os.environ.setdefault(var, value)
    for name in ("absl", "distributed", "tensorflow", "mediapipe"):
        logging.getLogger(name).setLevel(logging.ERROR)


def distributed_log_level() -> int:
    """The level of dask ``distributed``'s own loggers for a cluster this process starts
    (``LocalCluster(silence_logs=...)``): ``ERROR``, or ``WARNING`` when verbose."""
    return logging.WARNING if verbose_enabled() else logging.ERROR


@contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 into a temporary file for the block, then write back every line
    that is not :data:`NOISE` (a real error message or traceback still appears, after the
    block). Does nothing when verbose, or where fd 2 cannot be duplicated."""
    if verbose_enabled():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True) if not NOISE.match(ln)]
            if kept:
                os.write(2, "".join(kept).encode())
