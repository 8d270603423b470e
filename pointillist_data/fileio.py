"""Atomic file writing and JSON configs shared by the core and the stages.

Nothing already written is lost or half-written: every writer here writes to a temporary
name in the destination folder and renames it over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_savez", "JsonConfigMixin"]


def atomic_savez(path: str | Path, compressed: bool = False, **arrays: Any) -> Path:
    """``np.savez`` (or ``savez_compressed``) to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class JsonConfigMixin:
    """``to_dict`` / ``save`` / ``load`` for stage config dataclasses (saved beside outputs)."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path):
        return cls(**json.loads(Path(path).read_text()))
