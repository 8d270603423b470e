"""The stored objects of a Zarr v3 store as keys, and what names them in errors: the chunk /
shard keys covering rows of an array, the array and first-axis index of a key, sha256 digests,
and :class:`ShardChecksumError`. The lowest layer of the store modules (``base``,
``guard``, ``check`` build on it), so that they import each other one way only.
"""

from __future__ import annotations

import hashlib
import re

import zarr

from ..errors import StoreError

__all__ = ["ShardChecksumError", "sha256_bytes", "object_length", "object_keys", "key_index"]

_KEY = re.compile(r"^([^/]+)/c/(\d+)(?:/\d+)*$")


class ShardChecksumError(StoreError):
    """A stored object (shard or chunk) or the manifest differs from its recorded sha256; the
    message names the array, the object and the samples affected."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 digest of ``data`` (the manifest's checksums)."""
    return hashlib.sha256(data).hexdigest()


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else ""


def object_length(arr: zarr.Array) -> int:
    """Rows per stored object along the first axis (shard length, else chunk length)."""
    return int(arr.shards[0] if arr.shards else arr.chunks[0])


def object_keys(arr: zarr.Array, start: int, stop: int) -> list[str]:
    """Keys (``name/c/i[/j...]``) of the stored objects covering rows ``[start, stop)``."""
    if stop <= start:
        return []
    n = object_length(arr)
    inner = arr.shards or arr.chunks
    rest = [range(-(-s // c)) for s, c in zip(arr.shape[1:], inner[1:], strict=True)]
    tails = [""]
    for r in rest:
        tails = [f"{t}/{j}" for t in tails for j in r]
    name = arr.path.split("/")[-1]
    return [f"{name}/c/{k}{t}" for k in range(start // n, -(-stop // n)) for t in tails]


def key_index(key: str) -> tuple[str, int] | None:
    """``(array, first-axis object index)`` of a chunk key, ``None`` for other keys."""
    m = _KEY.match(key)
    return (m.group(1), int(m.group(2))) if m else None
