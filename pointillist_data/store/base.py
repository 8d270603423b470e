"""Append-only Zarr v3 stores, the read side shared by every store type of the toolkit.

A store is one Zarr v3 group whose arrays grow along their first axis. One *commit array*
(``offsets``, ``(S + 1,)`` int64, fill -1) says what is committed: its leading valid,
non-decreasing entries minus one are the committed samples ``S``; every other array's
committed rows follow from ``S`` and the offsets (:meth:`StoreReader.extents`). Rows beyond
them are leftovers of an interrupted append and are never read.

``manifest.json`` beside the arrays holds the sha256 of every stored object (a shard of a
sharded array, a chunk otherwise) of every array, a fingerprint of each array's metadata
(everything but its shape), the sha256 of the group attributes, and its own sha256
(``checksum``, over the canonical JSON of the rest). While an append rewrites an object
that already holds committed rows, ``previous`` keeps that object's old sha256 as an
accepted alternative. The write protocol is in :mod:`pointillist_data.store.commit`.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, ClassVar

import numpy as np
import zarr

from ..errors import StoreError
from .group import (
    MANIFEST,
    IncompleteStoreError,
    Manifest,
    MetadataError,
    Problem,
    StoreNotFoundError,
    attributes_sha256,
    base_store,
    committed_count,
    list_keys,
    member_arrays,
    metadata_fingerprint,
    metadata_problem,
    open_group,
    read_raw,
)
from .guard import ReadGuard, decode_rows
from .layout import ShardChecksumError, _short, key_index, object_keys, object_length, sha256_bytes
from .remote import is_remote

__all__ = ["StoreError", "StoreNotFoundError", "IncompleteStoreError", "ShardChecksumError", "MetadataError", "Manifest",
           "Problem", "metadata_problem",
           "StoreReader", "MANIFEST", "sha256_bytes", "open_group", "base_store", "object_keys", "key_index",
           "committed_count", "member_arrays", "read_raw", "object_problem", "list_keys", "metadata_fingerprint", "attributes_sha256", "is_remote"]

class StoreReader:
    """Committed state and checksum-verified reads of an append-only store.

    Subclasses set :attr:`store_type` and implement :meth:`extents` and :meth:`sample_bounds`.

    Args:
        group: the store's group (opened by :func:`open_group`).
        fs, root: fsspec filesystem and root path (kept for callers).
        verify: check every stored object's sha256 against the manifest the first time it is
            read; with ``verify=False`` reads are unchecked (a corrupted object may decode to
            wrong values or fail to decode).

    Raises:
        StoreError: not a store of this type or version; IncompleteStoreError: its creation
        was interrupted; ShardChecksumError: the manifest or a commit-array object is corrupted.
    """

    #: what one sample row is, and what the store is called, in messages
    UNIT, NOUN = "sample", "store"

    store_type: ClassVar[str] = ""
    format_version: ClassVar[str] = "1.1"
    commit_array: ClassVar[str] = "offsets"

    def __init__(self, group: zarr.Group, fs: Any, root: str, verify: bool = True) -> None:
        self.group, self.fs, self.root, self.verify = group, fs, root.rstrip("/"), verify
        self.zstore = group.store
        if not verify:  # unchecked decoding is bounded by the arrays' metadata
            self._guard: Any = ReadGuard(group.store, self._accepts)
        attrs = dict(group.attrs)
        self.attrs = attrs
        if attrs.get("format_version") is None or read_raw(self.zstore, f"{self.commit_array}/zarr.json") is None:
            self._raise_incomplete_or_foreign()
        if attrs.get("store_type", self.store_type) != self.store_type:
            raise StoreError(f"{root}: a '{attrs.get('store_type')}' store, not '{self.store_type}'")
        if str(attrs["format_version"]).split(".")[0] != self.format_version.split(".")[0]:
            raise StoreError(f"{root}: format version {attrs['format_version']} is not readable by {self.format_version}")
        self._manifest: Manifest | None = None
        self._verified: set[str] = set()
        self._arrays: dict[str, zarr.Array] = {}
        self.num_samples = 0
        if read_raw(self.zstore, f"{self.commit_array}/c/0") is None:  # before the manifest is needed
            self._raise_incomplete_or_foreign()
        if verify and not self.manifest.legacy and self.manifest.attributes_sha256 != attributes_sha256(attrs):
            raise MetadataError(f"{root}: attributes: zarr.json: group attributes differ from the manifest's fingerprint")
        commit = self.array(self.commit_array)
        if commit.shape[0] == 0 or read_raw(self.zstore, object_keys(commit, 0, 1)[0]) is None:
            self._raise_incomplete_or_foreign()
        offsets = self._decode(self.commit_array, commit, 0, commit.shape[0]).astype(np.int64)
        self.num_samples = committed_count(offsets)
        self._verify_rows(self.commit_array, 0, self.num_samples + 1)
        if offsets[0] != 0:
            raise StoreError(f"{root}: {self.commit_array}[0] is {offsets[0]}, not 0 (damaged commit array)")
        self.offsets = offsets[: self.num_samples + 1]

    def _raise_incomplete_or_foreign(self):
        m = read_raw(self.zstore, MANIFEST)
        try:
            has_samples = m is not None and bool(json.loads(m).get("samples"))
        except ValueError:
            has_samples = True
        if has_samples:
            raise StoreError(f"{self.root}: damaged store (no committed {self.commit_array} but a manifest with samples)")
        raise IncompleteStoreError(f"{self.root}: its creation was interrupted (no sample in it); create it again")

    # ------------------------------------------------------------------ committed state
    def __len__(self) -> int:
        return self.num_samples

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name``, opened once; when verifying, its ``zarr.json`` is first
        checked against the manifest's fingerprint.

        Raises:
            MetadataError: its ``zarr.json`` is unreadable, or (verifying) differs from the
                manifest's fingerprint; the message names it and the samples affected.
        """
        if name not in self._arrays:
            if self.verify and not self.manifest.legacy:
                text = metadata_problem(read_raw(self.zstore, f"{name}/zarr.json"), self.manifest.arrays.get(name))
                if text is not None:
                    self._metadata_error(name, text)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._arrays[name] = self.group[name] if self.verify else \
                        zarr.open_array(self._guard, path=name, mode="r", zarr_format=3)
            except OSError:
                raise
            except Exception as e:  # not UTF-8, not JSON, an unknown codec or dtype, a bad field
                if read_raw(self.zstore, f"{name}/zarr.json") is None:
                    raise StoreError(f"{self.root}: array '{name}' missing") from e
                self._metadata_error(name, f"array metadata unreadable ({type(e).__name__}: {_short(e)})", e)
        return self._arrays[name]

    def _metadata_error(self, name: str, text: str, cause: BaseException | None = None):
        S = self.num_samples
        # the subject ids name the samples, unless they are what is damaged
        names = self._names(0, S) if S else []
        p = Problem(name, f"{name}/zarr.json", text, (0, S) if S else None, names)
        err = MetadataError(f"{self.root}: {p}")
        err.problem = p
        raise err from cause

    def array_names(self) -> list[str]:
        return member_arrays(self.group)

    def extents(self) -> dict[str, int]:
        """Committed rows of every array (the commit array: ``S + 1``)."""
        raise NotImplementedError

    def sample_bounds(self, name: str) -> np.ndarray | str | None:
        """How rows of ``name`` map to samples: ``None`` (row i is sample i), ``"boundary"``
        (row i starts sample i and ends sample i - 1, as ``offsets``), or the ``(S + 1,)``
        row starts of each sample."""
        raise NotImplementedError

    def samples_for_rows(self, name: str, start: int, stop: int) -> tuple[int, int] | None:
        """The committed samples ``[first, last)`` stored in rows ``[start, stop)`` of ``name``."""
        S = self.num_samples
        bounds = self.sample_bounds(name)
        if bounds is None:
            a, b = start, min(stop, S)
        elif isinstance(bounds, str):
            a, b = max(0, start - 1), min(stop, S)
        else:
            a = int(np.searchsorted(bounds[1:], start, side="right"))
            b = int(np.searchsorted(bounds[:-1], stop, side="left"))
            b = min(b, S)
        return (a, b) if b > a else None

    # ------------------------------------------------------------------ verification
    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = self._load_manifest()
        return self._manifest

    def _load_manifest(self) -> Manifest:
        data = read_raw(self.zstore, MANIFEST)
        if data is None:
            raise StoreError(f"{self.root}: {MANIFEST} missing")
        return Manifest.parse(data, self.root)

    def check_object(self, key: str) -> str | None:
        """``None`` when ``key``'s bytes match the manifest, else what is wrong. A mismatch is
        checked again with a fresh manifest and fresh bytes (a concurrent append may have
        replaced both)."""
        for attempt in range(3):
            problem = object_problem(self.zstore, self.manifest, key)
            if problem is None:
                return None
            if attempt < 2:
                self._manifest = None
        return problem

    def _verify_rows(self, name: str, start: int, stop: int) -> None:
        if not self.verify:
            return
        for key in object_keys(self.array(name), start, stop):
            if key in self._verified:
                continue
            problem = self.check_object(key)
            if problem is not None:
                n = object_length(self.array(name))
                k = key_index(key)[1]
                p = self.problem(name, key, problem, k * n, (k + 1) * n)
                raise ShardChecksumError(f"{self.root}: {p}")
            self._verified.add(key)

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of array ``name``, checked against the manifest when verifying.

        Raises:
            MetadataError: the array's metadata is damaged (also: its shape holds fewer rows);
            ShardChecksumError: an object of the rows differs from the manifest (verifying).
        """
        arr = self.array(name)
        if stop > arr.shape[0]:  # a damaged shape; zarr would fail with an index error
            self._metadata_error(name, f"holds {arr.shape[0]} rows, rows up to {stop} are committed")
        self._verify_rows(name, start, stop)
        return self._decode(name, arr, start, stop)

    def _accepts(self, key: str, sha: str) -> bool | None:
        """For :class:`~pointillist_data.store.guard.ReadGuard`: the loaded manifest's verdict
        (``None``: no manifest loaded, or the key is not listed)."""
        m = self._manifest
        if m is None or m.legacy or key not in m.chunks:
            return None
        return m.accepts(key, sha)

    def _decode(self, name: str, arr: zarr.Array, start: int, stop: int) -> np.ndarray:
        """``arr[start:stop]``; a failure to decode raises :class:`ShardChecksumError` naming the
        object and the samples affected (:func:`pointillist_data.store.guard.decode_rows`)."""
        return decode_rows(self, name, arr, start, stop)

    # ------------------------------------------------------------------ whole-store check
    def problem(self, name: str, key: str, text: str, start: int, stop: int) -> Problem:
        """A :class:`Problem` of rows ``[start, stop)`` of ``name``, with the samples affected."""
        try:
            span = self.samples_for_rows(name, start, stop) if self.num_samples else None
        except Exception:  # the row index itself is unreadable
            span = None
        names = self._names(*span) if span else []
        return Problem(name, key, text, span, names)

    def sample_names(self, first: int, last: int) -> list[str]:
        """Subject ids of samples ``[first, last)`` for messages; ``[]`` when the ids are
        themselves what is damaged."""
        try:
            return self.subject_ids()[first:last]
        except Exception:
            return []

    def subject_ids(self) -> list[str]:
        """The ``subject_id`` of every committed sample (read once per sample count)."""
        n = self.num_samples
        if getattr(self, "_ids", None) is None or len(self._ids) != n:
            self._ids = [str(s) for s in self.read("subject_id", 0, n).tolist()]
        return self._ids

    def _check(self, i: int) -> int:
        """``i`` as a row in ``[0, num_samples)`` (negative counts from the end).

        Raises:
            IndexError: ``i`` is out of range (naming :attr:`UNIT` and :attr:`NOUN`).
        """
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"{self.UNIT} {i} out of range for a {self.NOUN} of {self.num_samples}")
        return i % self.num_samples

    def _names(self, first: int, last: int) -> list[str]:
        # naming reads the ids, whose own damage must not recurse into naming them again
        if getattr(self, "_naming", False):
            return []
        self._naming = True
        try:
            return self.sample_names(first, last)
        except Exception:
            return []
        finally:
            self._naming = False


def object_problem(zstore: Any, manifest: Manifest, key: str) -> str | None:
    """What is wrong with stored object ``key`` against ``manifest`` (``None``: nothing)."""
    data = read_raw(zstore, key)
    if data is None:
        return "missing"
    if key not in manifest.chunks:
        return None if manifest.legacy else f"not listed in {MANIFEST}"
    if manifest.accepts(key, sha256_bytes(data)):
        return None
    return f"corrupted (sha256 differs from {MANIFEST})"
