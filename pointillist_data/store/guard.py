"""Bounded unchecked reads: what a damaged object can make a ``verify=False`` read allocate.

An unchecked read decodes stored bytes without their sha256, and two fields of those bytes
set the size of what the codecs allocate before anything else is checked: the item count of
a variable-length (``vlen-utf8`` / ``vlen-bytes``) chunk (one flipped byte asked numcodecs for
4.3e9 Python objects, 31.9 GiB) and the uncompressed size in a Blosc header (up to 2 GiB).
:class:`ReadGuard` sits between the reader's arrays and the store and, before zarr decodes a
fetched object, bounds both by the array's metadata: a variable-length chunk is checked
against its sha256 in the manifest (these are the small per-sample id arrays), and every
Blosc frame must announce exactly the bytes of one chunk (``prod(chunk_shape) * itemsize``;
zarr always encodes whole chunks) and no more compressed bytes than it holds. Sharded
arrays are checked frame by frame through the shard index (Zarr v3 sharding codec,
``index_location: end``, index entries ``(offset, nbytes)`` uint64 plus a crc32c).

Arrays with other codecs are passed through unchanged. Source: the Blosc1 header layout
(c-blosc ``README_HEADER.rst``: version, versionlz, flags, typesize, nbytes, blocksize,
cbytes, little-endian), the Zarr v3 sharding specification.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import WrapperStore

from ..errors import StoreError
from .layout import ShardChecksumError, _short, key_index, object_keys, object_length, sha256_bytes

__all__ = ["ReadGuard", "UndecodableObject", "decode_rows"]

_VLEN = ("vlen-utf8", "vlen-bytes")
_EMPTY = 2**64 - 1  # a shard index entry of a chunk that is not stored


class UndecodableObject(ValueError):
    """A fetched object would decode to more than its array's chunk holds (or, variable-length,
    differs from the manifest). Attributes: ``key``, ``problem``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def _spec(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What to check for an array's objects, from its parsed ``zarr.json`` (``None``: nothing)."""
    try:
        codecs = meta["codecs"]
        chunk = [int(x) for x in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        names = [c["name"] for c in codecs]
        if any(n in _VLEN for n in names):
            return {"kind": "manifest"}
        itemsize = np.dtype(meta["data_type"]).itemsize
        if names[:1] == ["sharding_indexed"]:
            cfg = codecs[0]["configuration"]
            inner = [int(x) for x in cfg["chunk_shape"]]
            if [c["name"] for c in cfg["codecs"]] != ["bytes", "blosc"] or cfg.get("index_location", "end") != "end" \
                    or [c["name"] for c in cfg["index_codecs"]] != ["bytes", "crc32c"]:
                return None
            n = math.prod(-(-s // c) for s, c in zip(chunk, inner, strict=True))
            return {"kind": "sharded", "nbytes": math.prod(inner) * itemsize, "chunks": n}
        if names == ["bytes", "blosc"]:
            return {"kind": "blosc", "nbytes": math.prod(chunk) * itemsize}
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # zarr itself refuses such metadata (a MetadataError of the reader)
    return None


def _blosc_problem(frame: memoryview | np.ndarray, want: int) -> str | None:
    if len(frame) < 16:
        return f"undecodable (a Blosc frame of {len(frame)} bytes, shorter than its header)"
    nbytes, _, cbytes = struct.unpack("<III", bytes(frame[4:16]))
    if nbytes != want or cbytes > len(frame):
        return (f"undecodable (a Blosc header announces {nbytes} bytes in {cbytes}, a chunk holds {want} bytes "
                f"and {len(frame)} are stored)")
    return None


class ReadGuard(WrapperStore):
    """A read-only zarr store wrapper for unchecked reads (see the module docstring).

    Args:
        store: the store the arrays are read from.
        accepts: ``accepts(key, sha256) -> bool``: whether the manifest lists that object with
            that sha256 (``None`` when the manifest does not list the key: not checked).

    Raises (from ``get``): :class:`UndecodableObject` naming the object.
    """

    def __init__(self, store: Any, accepts: Any = None) -> None:
        super().__init__(store)
        self.accepts = accepts
        self.specs: dict[str, dict[str, Any] | None] = {}

    def _with_store(self, store):  # zarr may ask for a read-only twin; share the state
        twin = super()._with_store(store)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_store"})
        return twin

    async def _spec_of(self, name: str) -> dict[str, Any] | None:
        if name not in self.specs:
            raw = await self._store.get(f"{name}/zarr.json", default_buffer_prototype())
            try:
                self.specs[name] = _spec(json.loads(raw.to_bytes())) if raw is not None else None
            except (ValueError, UnicodeDecodeError):
                self.specs[name] = None
        return self.specs[name]

    async def get(self, key, prototype=None, byte_range=None):
        prototype = prototype or default_buffer_prototype()
        buf = await self._store.get(key, prototype, byte_range)
        ki = key_index(key)
        if buf is None or ki is None:
            return buf
        spec = await self._spec_of(ki[0])
        if spec is None:
            return buf
        data = buf.as_numpy_array().view(np.uint8).reshape(-1)
        problem = None
        if spec["kind"] == "manifest":
            ok = self.accepts(key, sha256_bytes(data.tobytes())) if byte_range is None and self.accepts else True
            problem = None if ok is not False else "corrupted (sha256 differs from manifest.json)"
        elif spec["kind"] == "blosc" or (spec["kind"] == "sharded" and type(byte_range).__name__ == "RangeByteRequest"):
            problem = _blosc_problem(data, spec["nbytes"])
        elif spec["kind"] == "sharded" and byte_range is None:
            problem = self._shard_problem(data, spec)
        if problem is not None:
            raise UndecodableObject(key, problem)
        return buf

    @staticmethod
    def _shard_problem(data: np.ndarray, spec: dict[str, Any]) -> str | None:
        size = 16 * spec["chunks"] + 4
        if len(data) < size:
            return f"undecodable (a shard of {len(data)} bytes, shorter than its index)"
        index = data[len(data) - size:len(data) - 4].view("<u8").reshape(-1, 2)
        for off, nb in index.tolist():
            if off == _EMPTY and nb == _EMPTY:
                continue
            if off + nb > len(data) - size:
                return "undecodable (its shard index points outside the shard)"
            problem = _blosc_problem(data[off:off + nb], spec["nbytes"])
            if problem is not None:
                return problem
        return None


def decode_rows(reader: Any, name: str, arr: Any, start: int, stop: int) -> np.ndarray:
    """``arr[start:stop]``; a failure to decode raises :class:`ShardChecksumError` naming the
    object (found by its sha256 when the failure does not say) and the samples affected."""
    for attempt in range(2):
        if not reader.verify and reader._manifest is None:
            try:  # (the guard checks variable-length chunks against it)
                reader._manifest = reader._load_manifest()
            except StoreError:
                pass
        try:
            return np.asarray(arr[start:stop])
        except OSError:
            raise
        except Exception as e:  # a damaged object: Blosc, zstd, crc32c or vlen errors, a bound
            from .remote import is_transport_error

            if not isinstance(e, UndecodableObject) and is_transport_error(e):  # a failed fetch: no finding
                raise
            if isinstance(e, UndecodableObject) and e.problem.startswith("corrupted") and attempt == 0:
                reader._manifest = None  # a concurrent append may have replaced both
                continue
            _raise_undecodable(reader, name, arr, start, stop, e)
    raise AssertionError("unreachable")


def _raise_undecodable(reader: Any, name: str, arr: Any, start: int, stop: int, e: Exception):
    key, text = (e.key, e.problem) if isinstance(e, UndecodableObject) else (None, None)
    if key is None:
        for k in object_keys(arr, start, stop):
            try:
                text = reader.check_object(k)
            except StoreError:  # no readable manifest: the object cannot be named
                break
            if text is not None:
                key = k
                break
    if key is None:
        p = reader.problem(name, name, f"rows {start}-{stop} undecodable ({type(e).__name__}: {_short(e)})",
                           start, stop)
    else:
        n, k = object_length(arr), key_index(key)[1]
        p = reader.problem(name, key, text, k * n, (k + 1) * n)
    raise ShardChecksumError(f"{reader.root}: {p}") from e
