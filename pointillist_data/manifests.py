"""Manifests: dataset splits, stage records and dataset (store) manifests, with JSON schemas.

The schemas live here and are checked in under ``manifests/schemas/`` (a test keeps the two
identical); examples are under ``manifests/examples/``. Validation uses ``jsonschema``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import jsonschema

__all__ = ["SCHEMAS", "validate_manifest", "make_split", "config_hash", "file_sha256", "write_schemas",
           "HashCache", "NERSEMBLE_TEST_IDENTITIES"]

NERSEMBLE_TEST_IDENTITIES = 25

_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "split": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pointillist dataset split",
        "type": "object",
        "required": ["dataset", "seed", "n_test", "train", "test"],
        "properties": {
            "dataset": {"type": "string"},
            "seed": {"type": "integer"},
            "n_test": {"type": "integer", "minimum": 0},
            "source": {"type": "string"},
            "train": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "test": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
    },
    "stage_record": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pointillist stage record",
        "type": "object",
        "required": ["stage", "participant", "status", "inputs", "config_hash", "outputs"],
        "properties": {
            "stage": {"enum": ["landmarks", "track", "fit", "canonicalize", "tokenize", "supervise", "shard"]},
            "participant": {"type": "string"},
            "status": {"enum": ["running", "complete", "failed", "skipped", "interrupted"],
                       "description": "interrupted: stopped by Ctrl-C (the error says so); a re-run resumes"},
            "inputs": {"type": "object", "additionalProperties": {"type": "string"}},
            "input_hash": {"type": "string"},
            "config": {"type": "object"},
            "config_hash": {"type": "string"},
            "outputs": {"type": "object", "additionalProperties": _SHA},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "metrics": {"type": "object"},
            "flagged": {"type": "array", "items": {"type": "object"}},
            "error": {"type": ["string", "null"]},
            "traceback": {"type": ["string", "null"]},
            "started": {"type": "string"},
            "finished": {"type": ["string", "null"]},
            "host": {"type": "string", "description": "host name of the process that ran the stage"},
            "worker_pid": {"type": "integer"},
            "worker_started": {"type": ["number", "null"], "description": "that process's start time (epoch s): "
                                                                         "with the pid, tells a killed stage"},
            "output_dir": {"type": "string"},
            "device": {"type": "string", "description": "torch device the stage ran on (cpu, cuda, cuda:N); "
                                                        "--device auto picks CUDA when present"},
            "preset": {"enum": ["cpu", "cuda"], "description": "the budget: cuda = the upstream-like preset "
                                                              "(GaussianAvatars' 600k fitting iterations, VHAP-like "
                                                              "tracking), cpu = the CPU budget"},
        },
    },
    "dataset_manifest": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pointillist store manifest",
        "description": "sha256 of every stored object (shard or chunk) of every array, of each array's metadata "
                       "without its shape, of the group attributes, and of the manifest itself ('checksum': sha256 "
                       "of the canonical JSON - sorted keys, no spaces - of every other entry). 'previous' holds "
                       "the accepted old sha256 of objects an append is rewriting.",
        "type": "object",
        "required": ["format_version", "store_type", "attributes_sha256", "arrays", "chunks", "previous", "checksum"],
        "properties": {
            "format_version": {"type": "string"},
            "store_type": {"type": "string"},
            "attributes_sha256": _SHA,
            "arrays": {"type": "object", "additionalProperties": _SHA},
            "chunks": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["sha256", "bytes"],
                "properties": {"sha256": _SHA, "bytes": {"type": "integer", "minimum": 0}}}},
            "previous": {"type": "object", "additionalProperties": _SHA},
            "checksum": _SHA,
            "samples": {"type": "array", "items": {
                "type": "object", "required": ["subject_id", "points", "tokens"],
                "properties": {"subject_id": {"type": "string"}, "points": {"type": "integer", "minimum": 1},
                               "tokens": {"type": "integer", "minimum": 12},
                               "split": {"type": "string", "description": "train / test / unassigned"},
                               "provenance": {"type": "object", "description": "how the sample was made and its "
                                              "quality figures (pointillist_data.provenance)",
                                              "required": ["subject_id", "flame", "code", "created", "quality"]}}}},
            "documents": {"type": "object", "description": "the dataset card files (DATASET.md, DATASET.png)",
                          "additionalProperties": {"type": "object", "required": ["sha256", "bytes"],
                                                   "properties": {"sha256": _SHA, "bytes": {"type": "integer"}}}},
            "documents_previous": {"type": "object", "description": "accepted old sha256 (or null: absent) of card "
                                   "files being rewritten", "additionalProperties": {"anyOf": [_SHA, {"type": "null"}]}},
        },
    },
}


def validate_manifest(obj: dict[str, Any], kind: str) -> None:
    """Validate ``obj`` against the schema ``kind`` (split, stage_record, dataset_manifest).

    Raises:
        jsonschema.ValidationError: naming the failing path.
        KeyError: unknown kind.
    """
    jsonschema.validate(obj, SCHEMAS[kind])


def make_split(ids: list[str], n_test: int = NERSEMBLE_TEST_IDENTITIES, seed: int = 0, dataset: str = "nersemble",
               source: str = "") -> dict[str, Any]:
    """Split participant ids: ``n_test`` test identities drawn with ``random.Random(seed)``,
    the rest train; both lists sorted. The seed and the full lists are recorded.

    Raises:
        ValueError: duplicate ids, or fewer ids than ``n_test``.
    """
    ids = sorted(str(i) for i in ids)
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate participant ids")
    if len(ids) < n_test:
        raise ValueError(f"{len(ids)} participants, cannot hold out {n_test}")
    test = sorted(random.Random(seed).sample(ids, n_test))
    split = {"dataset": dataset, "seed": seed, "n_test": n_test, "source": source,
             "train": [i for i in ids if i not in set(test)], "test": test}
    validate_manifest(split, "split")
    return split


def config_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), first 16 hex digits."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class HashCache:
    """sha256 of file contents, cached by (absolute path, size, modification time in ns), so a
    re-run hashes only files that changed (as git's index does).

    A file modified within the last 2 seconds is hashed but not cached: a second change in
    the same clock tick, keeping the size, could otherwise go unseen.

    Args:
        entries: a previous :meth:`to_dict`.

    Attributes:
        hashed: files actually read since construction.
    """

    RACY_S = 2.0

    def __init__(self, entries: dict[str, dict] | None = None) -> None:
        self.entries: dict[str, dict] = dict(entries or {})
        self.hashed = 0

    def sha256(self, path: str | Path) -> str:
        """Content sha256 of ``path``.

        Raises:
            FileNotFoundError / OSError: unreadable file.
        """
        p = os.path.abspath(path)
        st = os.stat(p)
        e = self.entries.get(p)
        if e is not None and e["size"] == st.st_size and e["mtime_ns"] == st.st_mtime_ns:
            return e["sha256"]
        digest = file_sha256(p)
        self.hashed += 1
        if time.time() - st.st_mtime > self.RACY_S:
            self.entries[p] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        else:
            self.entries.pop(p, None)
        return digest

    def to_dict(self) -> dict[str, dict]:
        return dict(self.entries)


def write_schemas(folder: str | Path) -> list[Path]:
    """Write every schema as ``<kind>.schema.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for kind, schema in SCHEMAS.items():
        p = folder / f"{kind}.schema.json"
        p.write_text(json.dumps(schema, indent=2) + "\n")
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_schemas(Path(__file__).resolve().parent.parent / "manifests" / "schemas"):
        print(p)
