"""Resumable long loops: periodic checkpoints of the fitting and tracking optimisations.

A :class:`StageCheckpoint` is one file (``fit.pt``, ``track.pt``) in a checkpoint folder,
written every ``every`` iterations through a temporary name and a rename
(:func:`pointillist_data.fileio.atomic_path`), so a crash or ``kill -9`` at any moment leaves
the previous checkpoint or the new one, never a torn file. It holds everything the loop's
future depends on (parameters, optimiser moments, the NumPy and torch random states, the
iteration), so a resumed loop computes what an uninterrupted one computes for the same seed.
A fingerprint of the inputs and the result-relevant configuration is stored inside; a
checkpoint of other inputs (or an unreadable one) is ignored and the loop starts over.
The loop removes its checkpoint when it finishes.

:func:`deferred_interrupt` turns Ctrl-C during such a loop into "finish this iteration, write
a checkpoint, then raise ``KeyboardInterrupt``", so an interrupted ``fit`` / ``track`` resumes
from the iteration it was stopped at (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_path

__all__ = ["StageCheckpoint", "deferred_interrupt", "digest_arrays", "result_config", "rng_state", "set_rng_state"]

# config fields that do not change a loop's result: a checkpoint written under other values resumes
NOT_RESULT_FIELDS = ("checkpoint_every", "log_every", "device")


def result_config(config: Any) -> dict:
    """The fields of a config dataclass (``to_dict()``) that change the result, i.e. all but
    :data:`NOT_RESULT_FIELDS`, plus the device type (``cpu`` / ``cuda``): the index of a GPU
    does not change a result, its kernels against the CPU's do, so a checkpoint written on one
    type is not resumed on the other."""
    d = config.to_dict()
    out = {k: v for k, v in d.items() if k not in NOT_RESULT_FIELDS}
    if "device" in d:
        out["device_type"] = str(d["device"]).split(":")[0]
    return out


def digest_arrays(*arrays: Any) -> str:
    """sha256 (hex, 16 characters) of arrays' dtypes, shapes and bytes (tensors are moved to the CPU)."""
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class StageCheckpoint:
    """The checkpoint of one loop.

    Args:
        folder: the checkpoint folder (created on the first save).
        name: file stem (``fit``, ``track``).
        fingerprint: JSON-able description of the inputs and result-relevant configuration;
            a checkpoint whose fingerprint differs is not resumed from.
        every: iterations between checkpoints (``0``: never).
    """

    def __init__(self, folder: str | Path, name: str, fingerprint: dict, every: int) -> None:
        self.folder, self.every = Path(folder), int(every)
        self.path = self.folder / f"{name}.pt"
        self.key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()

    def due(self, it: int) -> bool:
        """Whether a checkpoint is due after ``it`` iterations."""
        return self.every > 0 and it > 0 and it % self.every == 0

    def load(self, device: Any = "cpu") -> dict | None:
        """The saved state (tensors on ``device``), or ``None`` when there is none, it is
        unreadable or it belongs to other inputs or another configuration."""
        import torch

        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception:  # a file of an older format, or damaged on disk: start over
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.key:
            return None
        return state

    def save(self, state: dict) -> Path:
        """Write ``state`` (tensors, numbers, strings, lists and dicts of them) atomically."""
        import torch

        with atomic_path(self.path, ".pt") as tmp:
            torch.save({**state, "fingerprint": self.key}, tmp)
        return self.path

    def remove(self) -> None:
        """Delete the checkpoint (and its folder when that is left empty)."""
        self.path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # absent, or holds other files
            pass


def rng_state(rng: np.random.Generator, device: Any) -> dict:
    """The NumPy generator's and torch's random states (CPU, and CUDA on a CUDA device)."""
    import torch

    out = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return out


def set_rng_state(rng: np.random.Generator, state: dict, device: Any) -> None:
    """Restore what :func:`rng_state` saved."""
    import torch

    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), torch.device(device))


class _Interrupt:
    requested = False


@contextmanager
def deferred_interrupt() -> Iterator[_Interrupt]:
    """Within the block the first SIGINT only sets ``.requested`` (the loop checks it after
    each iteration, writes a checkpoint and raises ``KeyboardInterrupt``); a second one
    raises at once. Outside the main thread, or where SIGINT is not Python's default handler
    (a dask worker ignores it), nothing changes."""
    flag = _Interrupt()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
