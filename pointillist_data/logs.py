"""Third-party log noise, kept off the terminal unless the user asks for it.

MediaPipe's native code (TFLite, absl C++ logging) writes lines such as
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU`` and
``W0000 00:00:1796649293.02 23829 inference_feedback_manager.cc:114] ...`` straight to file
descriptor 2, which no Python logging setting reaches; dask's ``distributed`` logs worker
start-up, port and nanny warnings (``Worker process still alive after 4.0 seconds, killing``).
None of them says anything a user of ``pointillist`` can act on. :func:`quiet_third_party`
lowers the Python loggers and sets the environment variables that the worker processes
inherit; :func:`filter_native_stderr` drops the native lines of a process that loads MediaPipe.
``POINTILLIST_VERBOSE=1`` (``pointillist --verbose``) keeps everything.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

__all__ = ["verbose_enabled", "quiet_third_party", "distributed_log_level", "filter_native_stderr", "NOISE"]

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


_FILTER: dict = {}


def filter_native_stderr() -> None:
    """From now on, pass file descriptor 2 of this process through a filter that drops
    :data:`NOISE` lines and forwards every other line (a real error or traceback still
    appears). Native libraries log from their own threads at any time (MediaPipe's graph
    threads), so the filter stays for the life of the process: a pipe read by a daemon thread,
    drained at exit. Once per process; nothing when verbose, or where fd 2 cannot be replaced.
    """
    if verbose_enabled() or _FILTER:
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, ValueError):
        return

    def forward(data: bytes) -> None:
        while data:
            data = data[os.write(original, data):]

    def pump() -> None:
        rest = b""
        while chunk := os.read(read_end, 1 << 16):
            *lines, rest = (rest + chunk).split(b"\n")
            forward(b"".join(ln + b"\n" for ln in lines if not NOISE.match(ln.decode(errors="replace"))))
        if rest and not NOISE.match(rest.decode(errors="replace")):
            forward(rest)
        os.close(read_end)

    thread = threading.Thread(target=pump, name="pointillist-stderr-filter", daemon=True)
    thread.start()
    _FILTER.update(thread=thread, original=original)

    def drain() -> None:  # at exit: the pipe's last write end closes, the pump forwards what is left
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)
        thread.join(timeout=2.0)

    atexit.register(drain)
