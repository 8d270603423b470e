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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..errors import StoreError
from .guard import ReadGuard, decode_rows
from .layout import ShardChecksumError, _short, key_index, object_keys, object_length, sha256_bytes
from .remote import is_remote, probe_http_range, raise_if_transport

__all__ = ["StoreError", "StoreNotFoundError", "IncompleteStoreError", "ShardChecksumError", "MetadataError", "Manifest",
           "Problem", "metadata_problem",
           "StoreReader", "MANIFEST", "sha256_bytes", "open_group", "base_store", "object_keys", "key_index",
           "committed_count", "member_arrays", "read_raw", "object_problem", "list_keys", "metadata_fingerprint", "attributes_sha256", "is_remote"]

MANIFEST = "manifest.json"


class StoreNotFoundError(StoreError):
    """Nothing is stored at the path or URL."""


class IncompleteStoreError(StoreError):
    """The creation of a store was interrupted (it holds no sample); creating it again replaces it."""


class MetadataError(ShardChecksumError):
    """The group's or an array's ``zarr.json`` is unreadable, or differs from the fingerprint
    the manifest recorded (``verify=True``); the message names the file and the samples
    affected."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def base_store(url: str | Path, read_only: bool) -> zarr.abc.store.Store:
    """The zarr store of a local path or an fsspec URL (``s3://``, ``memory://``, ...)."""
    if is_remote(url):
        from zarr.storage import FsspecStore

        # zarr needs its own asynchronous filesystem instance on its event loop; sharing
        # fsspec's synchronous one across loops fails for async backends such as s3fs
        return FsspecStore.from_url(str(url), read_only=read_only)
    from zarr.storage import LocalStore

    return LocalStore(str(url).removeprefix("file://"), read_only=read_only)


def open_group(path_or_url: str | Path, mode: str = "r"):
    """Open the group of a store (never through its consolidated metadata, whose shapes
    can lag behind a crashed append); returns ``(group, fs, root)`` with the fsspec
    filesystem and root path.

    An ``http(s)://`` store is first probed with one byte-range request
    (:func:`~pointillist_data.store.remote.probe_http_range`).

    Raises:
        StoreNotFoundError: no group there.
        RemoteReadError: a remote store's server ignores ``Range`` or cannot be read (transport).
    """
    import fsspec


    url = str(path_or_url)
    fs, root = fsspec.core.url_to_fs(url)
    if not is_remote(url) and not Path(root).is_dir():
        raise StoreNotFoundError(f"{url}: no store ({'a file, not a store folder' if Path(root).exists() else 'missing'})")
    probe_http_range(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(base_store(url, mode == "r"), mode=mode, zarr_format=3, use_consolidated=False)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
        if _damaged_node(url):
            raise MetadataError(f"{url}/zarr.json: group metadata unreadable ({type(e).__name__}: {_short(e)})") from e
        raise StoreNotFoundError(f"{url}: no store ({type(e).__name__})") from e
    except Exception as e:
        raise_if_transport(e, url, "zarr.json")
        # a damaged group zarr.json (not UTF-8, not JSON, a bad field): one named error
        raise MetadataError(f"{url}/zarr.json: group metadata unreadable ({type(e).__name__}: "
                            f"{_short(e)})") from e
    return g, fs, root.rstrip("/")


def _damaged_node(url: str) -> bool:
    """Whether the root ``zarr.json`` exists but is no readable node description."""
    try:
        raw = read_raw(base_store(url, True), "zarr.json")
    except Exception:
        return False
    if raw is None:
        return False
    try:
        return json.loads(raw).get("node_type") not in ("group", "array")
    except (ValueError, AttributeError):
        return True


def member_arrays(group: zarr.Group) -> list[str]:
    """Names of the arrays in ``group`` (the manifest beside them is no zarr node); when a
    member's ``zarr.json`` cannot be parsed, every child folder holding a ``zarr.json``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sorted(k for k, _ in group.arrays())
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError):
        return child_nodes(group.store)


def child_nodes(store: zarr.abc.store.Store) -> list[str]:
    """Names of the children of the store root that hold a ``zarr.json`` (read as raw keys,
    so a damaged one is listed too)."""

    async def collect() -> list[str]:
        return [k async for k in store.list_dir("")]

    try:
        names = sync(collect())
    except (FileNotFoundError, NotImplementedError):
        return []
    return sorted(n.rstrip("/") for n in names
                  if "." not in n.rstrip("/")[:1] and n.rstrip("/") != "zarr.json"
                  and sync(store.exists(f"{n.rstrip('/')}/zarr.json")))


def read_raw(store: zarr.abc.store.Store, key: str) -> bytes | None:
    """The stored bytes of ``key`` (``None`` when absent)."""
    buf = sync(store.get(key, default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def list_keys(store: zarr.abc.store.Store, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` (all keys for ``""``)."""

    async def collect() -> list[str]:
        it = store.list_prefix(prefix) if prefix else store.list()
        return [k async for k in it]

    try:
        return sorted(sync(collect()))
    except FileNotFoundError:
        return []


def committed_count(offsets: np.ndarray) -> int:
    """Committed samples: the leading entries that are valid (>= 0) and non-decreasing, minus one."""
    off = np.asarray(offsets, dtype=np.int64)
    ok = off >= 0
    if len(off) > 1:
        ok[1:] &= np.diff(off) >= 0
    n = int(np.argmin(ok)) if not ok.all() else len(off)
    return max(0, n - 1)


def metadata_fingerprint(raw: bytes) -> str:
    """sha256 of an array's ``zarr.json`` without its shape (which grows with every append)."""
    meta = json.loads(raw)
    meta.pop("shape", None)
    return sha256_bytes(_canonical(meta))


def attributes_sha256(attrs: dict) -> str:
    return sha256_bytes(_canonical(attrs))


def metadata_problem(raw: bytes | None, fingerprint: str | None) -> str | None:
    """What is wrong with an array's ``zarr.json`` bytes ``raw`` against the manifest's
    ``fingerprint`` (``None``: nothing; an array the manifest does not list has ``None``)."""
    if raw is None:
        return "missing"
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        return f"array metadata unreadable ({type(e).__name__}: {_short(e)})"
    if fingerprint is None:
        return f"array not listed in {MANIFEST}"
    if metadata_fingerprint(raw) != fingerprint:
        return "array metadata differs from the manifest's fingerprint"
    return None


@dataclass
class Manifest:
    """The parsed ``manifest.json`` (see the module docstring).

    Attributes:
        chunks: ``{key: {"sha256", "bytes"}}`` of every stored object.
        previous: ``{key: sha256}`` accepted old versions of objects being rewritten.
        arrays: ``{array: metadata fingerprint}``.
        extra: store-specific top-level entries (the token store's ``samples``).
        legacy: a format 1.0 manifest (shards of the per-point arrays only, no own checksum).
    """

    format_version: str
    store_type: str = ""
    attributes_sha256: str = ""
    arrays: dict[str, str] = field(default_factory=dict)
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)
    previous: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False

    _FIELDS: ClassVar[tuple[str, ...]] = ("format_version", "store_type", "attributes_sha256", "arrays", "chunks",
                                          "previous")

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """Parse and check the manifest's own sha256.

        Raises:
            ShardChecksumError: not JSON, or its checksum does not match its content.
        """
        try:
            d = json.loads(data)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise ShardChecksumError(f"{where}/{MANIFEST}: unreadable ({e})") from None
        if "checksum" not in d and "shards" in d:  # format 1.0
            return cls(d.get("format_version", "1.0"), chunks=dict(d["shards"]), extra={"samples": d.get("samples", [])},
                       legacy=True)
        want = d.pop("checksum", None)
        if want != sha256_bytes(_canonical(d)):
            raise ShardChecksumError(f"{where}/{MANIFEST}: corrupted (its checksum does not match its content)")
        try:
            return cls(**{k: d.pop(k) for k in cls._FIELDS}, extra=d)
        except KeyError as e:
            raise ShardChecksumError(f"{where}/{MANIFEST}: missing entry {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self._FIELDS}
        d.update(self.extra)
        d["checksum"] = sha256_bytes(_canonical(d))
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()

    def accepts(self, key: str, sha: str) -> bool:
        entry = self.chunks.get(key)
        return entry is not None and (entry["sha256"] == sha or self.previous.get(key) == sha)


@dataclass
class Problem:
    """One finding of a store check: the array, the object key, what is wrong, and the
    committed samples it affects (``None``: unknown, or no sample)."""

    array: str
    key: str
    problem: str
    samples: tuple[int, int] | None = None
    subjects: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = self.key if self.key.startswith(f"{self.array}/") or self.key == MANIFEST else \
            f"{self.array}: {self.key}" if self.key and self.key != self.array else self.array
        text = f"{where}: {self.problem}"
        if self.samples is not None:
            a, b = self.samples
            ids = f" ({', '.join(self.subjects[:4])}{', ...' if len(self.subjects) > 4 else ''})" if self.subjects else ""
            text += f"; samples affected: {a}" + (f"-{b - 1}" if b - a > 1 else "") + ids
        return text


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
        """Names of samples ``[first, last)`` for messages (subclasses: subject ids)."""
        return []

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
