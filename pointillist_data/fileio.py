"""Atomic file writing and JSON configs shared by the core and the stages.

Nothing already written is lost or half-written: every writer here writes to a temporary
name in the destination folder and renames it over the target. The temporary file is
created by an ordinary ``open`` (mode 0666 less the umask), never by ``tempfile.mkstemp``,
whose 0600 would survive the rename and lock a shared folder's group out of the outputs.
"""

from __future__ import annotations

import difflib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["atomic_savez", "atomic_save_npy", "atomic_write_text", "atomic_path", "temp_name", "JsonConfigMixin", "build_config",
           "read_json_object"]


def temp_name(name: str, suffix: str = "") -> str:
    """A temporary file name for ``name`` unique to this process and call:
    ``.<name>.<pid>-<random>.tmp<suffix>`` (``suffix`` keeps the extension writers infer a
    format from, e.g. ``.png``). Several processes (DDP ranks, dask workers) may write the
    same target in one folder; each gets its own temporary file."""
    return f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{suffix}"


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path (see :func:`temp_name`) beside ``path``; when the block ends
    without an error it is renamed over ``path``, otherwise it is removed.

    Example::

        with atomic_path(out / "image.png", ".png") as tmp:
            Image.fromarray(arr).save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name, suffix))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_savez(path: str | Path, compressed: bool = False, **arrays: Any) -> Path:
    """``np.savez`` (or ``savez_compressed``) to ``path`` through a temporary file and a rename
    (the file's mode follows the umask)."""
    path = Path(path)
    with atomic_path(path, ".npz") as tmp:  # the .npz suffix keeps numpy from appending one
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    return path


def atomic_save_npy(path: str | Path, arr: np.ndarray) -> Path:
    """``np.save`` of one array to ``path`` through a temporary file and a rename (the file's
    mode follows the umask)."""
    path = Path(path)
    with atomic_path(path, ".npy") as tmp:  # the .npy suffix keeps numpy from appending one
        np.save(tmp, arr)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary name unique to this process, then rename
    (several processes may write into one folder); the file's mode follows the umask."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_json_object(path: str | Path) -> dict:
    """A JSON file holding one object.

    Raises:
        ConfigError: the file is missing, not JSON, or not an object (naming the file).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def build_config(cls, values: dict[str, Any], where: str):
    """``cls(**values)`` for a config dataclass, with one-line errors.

    Args:
        cls: the dataclass.
        values: field values (from a JSON file, options or a parent config).
        where: what to name in errors (a file path, ``--config``, ``tracking`` ...).

    Raises:
        ConfigError: an unknown field (the valid ones are listed) or a value the dataclass's
            ``__post_init__`` rejects.
    """
    valid = [f.name for f in fields(cls) if f.init]  # derived fields are not inputs
    unknown = sorted(set(values) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        raise ConfigError(f"{where}: unknown field(s) {', '.join(repr(u) for u in unknown)} of "
                          f"{cls.__name__}" + (f" (did you mean '{close[0]}'?)" if close else "")
                          + f" (valid: {', '.join(valid)})")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


class JsonConfigMixin:
    """``to_dict`` / ``save`` / ``load`` for stage config dataclasses (saved beside outputs)."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON atomically (temporary name unique to this process)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None):
        """Read a config JSON (plus ``overrides``).

        Raises:
            ConfigError: unreadable file, unknown field (valid ones listed) or bad value.
        """
        return build_config(cls, {**read_json_object(path), **(overrides or {})}, str(path))
