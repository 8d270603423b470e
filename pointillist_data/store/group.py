"""The Zarr group of an append-only store and its ``manifest.json``: opening a group (local or
remote), raw object reads and listings, the parsed manifest with its own checksum, metadata
fingerprints, and :class:`Problem`, one finding of a store check. The manifest's contents are
described in :mod:`pointillist_data.store.base`; readers build on this module there.
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
from .layout import ShardChecksumError, _short, sha256_bytes
from .remote import is_remote, probe_http_range, raise_if_transport

__all__ = ["StoreNotFoundError", "IncompleteStoreError", "MetadataError", "Manifest", "Problem",
           "metadata_problem", "MANIFEST", "base_store", "open_group", "committed_count", "member_arrays",
           "child_nodes", "read_raw", "list_keys", "metadata_fingerprint", "attributes_sha256"]

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
