"""Crash-safe writes of append-only Zarr v3 stores (the layout of :mod:`pointillist_data.store.base`).

Every store type of the toolkit (the token store; a companion store beside it) subclasses
:class:`AppendOnlyWriter`, defines its arrays in ``_define`` and writes a batch through
``self.arrays`` inside :meth:`AppendOnlyWriter.transaction`, which commits it. The protocol:

1. Objects that hold no committed row are written at once (whole new shards, new chunks);
   objects that already hold committed rows (the partly filled chunk of a per-sample array)
   and every object of the commit array are held in memory.
2. ``manifest.json`` is written listing the sha256 of every object, old and new, with the
   old sha256 of each held object kept under ``previous`` (either version is valid).
3. The held objects are written (each write replaces a whole object atomically: a rename
   on a local disk, a PUT on S3), the commit array last, its lowest object last of all:
   that write commits the batch.
4. ``manifest.json`` is written again without ``previous``; the consolidated metadata
   is refreshed.

Opening a store for appending recovers from a crash at any point: the committed state is
re-derived from the commit array, arrays are cut back to it, objects beyond it and
temporary files are deleted, the manifest is pruned to it and the consolidated metadata
refreshed when stale. Creation builds the store under a temporary sibling name and renames
it into place (a local disk); on object stores, where a rename is not atomic, an
interrupted creation leaves a store without a committed commit array, which
:class:`~pointillist_data.store.base.IncompleteStoreError` names and creating again replaces.

Every storage mutation passes :func:`_fault_point` first (tests replace it to crash at
any write). One writer at a time per store; readers may read while it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, WrapperStore

from .base import (
    MANIFEST,
    IncompleteStoreError,
    Manifest,
    StoreError,
    StoreNotFoundError,
    StoreReader,
    attributes_sha256,
    base_store,
    is_remote,
    key_index,
    list_keys,
    member_arrays,
    metadata_fingerprint,
    object_length,
    read_raw,
    sha256_bytes,
)

__all__ = ["AppendOnlyWriter", "StagedStore", "store_state", "resolve_fsync"]


def resolve_fsync(fsync: bool | None) -> bool:
    """``fsync`` or, when ``None``, the ``POINTILLIST_FSYNC`` setting (on unless ``0``): every
    write is flushed to the disk before the next depends on it, so a power loss cannot reorder
    them. Off, a crash of the writing process is still safe; a power loss may not be."""
    if fsync is not None:
        return bool(fsync)
    return os.environ.get("POINTILLIST_FSYNC", "1").lower() not in ("0", "false", "no", "off")


def _fault_point(op: str, key: str) -> None:
    """Called before every storage mutation (``put``, ``delete``, ``rename``) of a writer."""


@contextlib.contextmanager
def _write_config() -> Iterator[None]:
    # every touched object is stored, even when it holds only the fill value, so that the
    # manifest can list (and a check can expect) every object of the committed rows
    with zarr.config.set({"array.write_empty_chunks": True}):
        yield


def _slice(data: bytes, byte_range: Any) -> bytes:
    if byte_range is None:
        return data
    if hasattr(byte_range, "start"):
        return data[byte_range.start:byte_range.end]
    if hasattr(byte_range, "offset"):
        return data[byte_range.offset:]
    return data[-byte_range.suffix:] if byte_range.suffix else b""


class StagedStore(WrapperStore):
    """A zarr store wrapper that holds back writes of the keys ``hold(key)`` selects and
    writes the others at once, each as one atomic whole-object replacement (locally:
    temporary file, optional fsync, rename). Reads see held writes."""

    def __init__(self, store: zarr.abc.store.Store, fsync: bool | None = None) -> None:
        super().__init__(store)
        self.fsync = resolve_fsync(fsync)
        self.hold = lambda key: False
        self.held: dict[str, bytes] = {}
        self.written: dict[str, tuple[str, int]] = {}
        self.local_root = Path(store.root) if isinstance(store, LocalStore) else None
        self._dirty: set[Path] = set()

    def _with_store(self, store):  # zarr may ask for a read-only twin; share the state
        twin = super()._with_store(store)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_store"})
        return twin

    async def get(self, key, prototype=None, byte_range=None):
        prototype = prototype or default_buffer_prototype()
        if key in self.held:
            return prototype.buffer.from_bytes(_slice(self.held[key], byte_range))
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        return key in self.held or await self._store.exists(key)

    async def set(self, key: str, value) -> None:
        data = value.to_bytes()
        if self.hold(key):
            self.held[key] = data
        else:
            await self.put(key, data)

    async def set_if_not_exists(self, key: str, value) -> None:
        if not await self.exists(key):
            await self.set(key, value)

    async def _set_many(self, values) -> None:
        for k, v in values:
            await self.set(k, v)

    async def delete(self, key: str) -> None:
        self.held.pop(key, None)
        await self.remove(key)

    async def put(self, key: str, data: bytes) -> None:
        """Write one whole object now (the only way bytes reach storage)."""
        _fault_point("put", key)
        if self.local_root is not None:
            # in a thread, as zarr's own store does, so that encoding and writing overlap
            digest = await asyncio.to_thread(self._write_local, key, data)
        else:
            await self._store.set(key, default_buffer_prototype().buffer.from_bytes(data))
            digest = sha256_bytes(data)
        self.written[key] = (digest, len(data))

    def _write_local(self, key: str, data: bytes) -> str:
        path = self.local_root / key
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirty.update(path.parents[1:len(Path(key).parents)])  # new folders: their entries too
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        self._dirty.add(path.parent)
        return sha256_bytes(data)

    async def remove(self, key: str) -> None:
        _fault_point("delete", key)
        await self._store.delete(key)
        self.written.pop(key, None)

    def put_sync(self, key: str, data: bytes) -> None:
        sync(self.put(key, data))

    def remove_sync(self, key: str) -> None:
        sync(self.remove(key))

    def barrier(self) -> None:
        """Make the writes so far durable before the next ones (fsync of touched folders)."""
        if self.fsync and self.local_root is not None:
            for d in sorted(self._dirty):
                if d.is_dir() and str(d).startswith(str(self.local_root.parent)):
                    fd = os.open(d, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        self._dirty.clear()


def store_state(url: str | Path, commit_array: str = "offsets") -> str:
    """What is at ``url``: ``"absent"``, ``"incomplete"`` (an interrupted creation: no
    committed ``commit_array`` and no sample in the manifest), ``"store"``, or ``"foreign"``
    (a file, a folder / prefix that is no store, or a damaged store with samples)."""
    if not is_remote(url):
        p = Path(str(url).removeprefix("file://"))
        if not p.exists():
            return "absent"
        if not p.is_dir():
            return "foreign"
        if not any(p.iterdir()):
            return "absent"
    st = base_store(url, read_only=True)
    keys = list_keys(st)
    if not keys:
        return "absent"
    if "zarr.json" not in keys:
        return "foreign"
    try:
        attrs = json.loads(read_raw(st, "zarr.json")).get("attributes", {})
    except ValueError:
        attrs = {}
    if f"{commit_array}/c/0" in keys and "format_version" in attrs and MANIFEST in keys:
        return "store"
    m = read_raw(st, MANIFEST)
    try:
        has_samples = m is not None and bool(json.loads(m).get("samples"))
    except ValueError:
        has_samples = True
    return "foreign" if has_samples else "incomplete"


def _pid_alive(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` may still run (another host's: assume so)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AppendOnlyWriter:
    """Base of the crash-safe writers (see the module docstring).

    Subclasses set :attr:`reader_cls`, implement ``_define(group, config)`` (attributes,
    arrays, initial rows; not the commit array's first value) and ``_prune_extra(extra, S)``
    (cut store-specific manifest entries to ``S`` samples), and append with::

        with self.transaction({"samples": [...]}):
            self.arrays["x"].resize(...); self.arrays["x"][a:b] = ...   # commit array last

    Attributes:
        num_samples: committed samples; extents: committed rows per array.
    """

    reader_cls: ClassVar[type[StoreReader]]

    def __init__(self, url: str, group: zarr.Group, staged: StagedStore, fs: Any, root: str) -> None:
        self.url, self.group, self.staged, self.fs, self.root = url, group, staged, fs, root
        self.commit_array = self.reader_cls.commit_array
        with _write_config():
            self.arrays = {name: group[name] for name in member_arrays(group)}
        self._len = {name: object_length(a) for name, a in self.arrays.items()}
        self._recover()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path_or_url: str | Path, fsync: bool | None = None):
        """Open an existing store for appending, recovering from an interrupted write.

        Raises:
            StoreNotFoundError: nothing there; IncompleteStoreError: an interrupted creation
            (create it again); StoreError / ShardChecksumError: not appendable (damaged).
        """
        url = str(path_or_url)
        if store_state(url, cls.reader_cls.commit_array) == "absent":
            raise StoreNotFoundError(f"{url}: no store")
        fs, root = fsspec.core.url_to_fs(url)
        staged = StagedStore(base_store(url, read_only=False), fsync)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(staged, mode="r+", zarr_format=3, use_consolidated=False)
        return cls(url, g, staged, fs, root.rstrip("/"))

    @classmethod
    def open_or_create(cls, path_or_url: str | Path, config: Any, fsync: bool | None = None):
        """Open the store for appending, or create it (``config``, or a function returning
        it, is used only then) when nothing or an interrupted creation is there.

        Raises:
            the errors of :meth:`open` other than "absent" / "interrupted creation", and those
            of the subclass's ``create``.
        """
        try:
            return cls.open(path_or_url, fsync)
        except (StoreNotFoundError, IncompleteStoreError):
            return cls.create(path_or_url, config() if callable(config) else config, fsync=fsync)

    def _reader(self) -> StoreReader:
        return self.reader_cls(self.group, self.fs, self.root, verify=False)

    def _recover(self) -> None:
        """Re-derive the committed state from the arrays and remove what lies beyond it."""
        st = self.staged
        reader = self._reader()
        m = reader.manifest
        if m.legacy:
            raise StoreError(f"{self.url}: a format {m.format_version} store cannot be appended to; create a new one")
        ext = reader.extents()
        with _write_config():
            for name, arr in self.arrays.items():
                rows = ext.get(name, 0)
                if arr.shape[0] < rows:
                    raise StoreError(f"{self.url}: array '{name}' holds {arr.shape[0]} rows, {rows} are committed")
                if arr.shape[0] > rows:
                    arr.resize((rows,) + arr.shape[1:])
        for key in list_keys(st._store):
            ki = key_index(key)
            if key.endswith(".partial") or (ki and ki[0] in ext and ki[1] * self._len[ki[0]] >= ext[ki[0]]):
                st.remove_sync(key)
        changed = False
        for key in list(m.chunks):
            ki = key_index(key)
            if ki and ki[0] in ext and ki[1] * self._len[ki[0]] >= ext[ki[0]]:
                del m.chunks[key]
                changed = True
        for key, old in list(m.previous.items()):  # which version did the interrupted append leave?
            data = read_raw(st._store, key)
            sha = sha256_bytes(data) if data is not None and key in m.chunks else None
            if sha == old:
                m.chunks[key] = {"sha256": old, "bytes": len(data)}
            if sha is None or sha in (old, m.chunks[key]["sha256"]):
                del m.previous[key]
                changed = True
        extra = json.loads(json.dumps(m.extra))
        self._prune_extra(m.extra, reader.num_samples)
        changed |= extra != m.extra
        if changed:
            st.put_sync(MANIFEST, m.to_bytes())
        if self._consolidation_stale():
            self._consolidate()
        st.barrier()
        st.written.clear()
        self.manifest, self.extents, self.num_samples = m, ext, reader.num_samples
        st.hold = self._hold
        self._after_recover(reader)

    def _after_recover(self, reader: StoreReader) -> None:
        """Hook: read whatever the subclass keeps in memory from the committed state."""

    @classmethod
    def _prune_extra(cls, extra: dict, num_samples: int) -> None:
        """Hook: cut store-specific manifest entries back to ``num_samples`` samples."""

    def _hold(self, key: str) -> bool:
        ki = key_index(key)
        if ki is None:
            return False  # metadata: a grown shape exposes only rows no commit covers yet
        name, k = ki
        return name == self.commit_array or k * self._len.get(name, 1) < self.extents.get(name, 0)

    def _consolidation_stale(self) -> bool:
        raw = read_raw(self.staged._store, "zarr.json")
        try:
            cm = json.loads(raw).get("consolidated_metadata") or {}
        except (TypeError, ValueError):
            return True
        meta = cm.get("metadata", {})
        return any(meta.get(n, {}).get("shape") != list(a.shape) for n, a in self.arrays.items())

    def _consolidate(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self.staged)

    # ------------------------------------------------------------------ appending
    @contextlib.contextmanager
    def transaction(self, extra: dict[str, Any]) -> Iterator[None]:
        """Write one batch through :attr:`arrays` and commit it on leaving (see the module
        docstring); ``extra`` updates the store-specific manifest entries. An exception
        inside drops the batch (nothing of it becomes visible) and re-reads the committed state."""
        st = self.staged
        st.held.clear()
        st.written.clear()
        try:
            with _write_config():
                yield
                self._commit(extra)
        except Exception:
            st.held.clear()
            st.written.clear()
            self._recover()
            raise

    def _commit(self, extra: dict[str, Any]) -> None:
        st, m = self.staged, self.manifest
        m = Manifest(**{k: json.loads(json.dumps(getattr(m, k))) for k in Manifest._FIELDS}, extra=dict(m.extra))
        for key, (sha, n) in st.written.items():
            if key_index(key):
                m.chunks[key] = {"sha256": sha, "bytes": n}
        held = sorted(st.held)
        for key in held:
            data = st.held[key]
            old = m.chunks.get(key)
            if old is not None and old["sha256"] != sha256_bytes(data):
                m.previous[key] = old["sha256"]
            m.chunks[key] = {"sha256": sha256_bytes(data), "bytes": len(data)}
        m.extra.update(extra)
        st.barrier()
        st.put_sync(MANIFEST, m.to_bytes())
        commit = sorted((k for k in held if key_index(k)[0] == self.commit_array), key=lambda k: -key_index(k)[1])
        for key in [k for k in held if key_index(k)[0] != self.commit_array]:
            st.put_sync(key, st.held.pop(key))
        st.barrier()
        for key in commit:  # the lowest object of the commit array last: the commit
            st.put_sync(key, st.held.pop(key))
        st.barrier()
        m.previous = {}
        st.put_sync(MANIFEST, m.to_bytes())
        self._consolidate()
        st.barrier()
        st.written.clear()
        reader = self._reader()
        self.manifest, self.extents, self.num_samples = m, reader.extents(), reader.num_samples
        self._after_recover(reader)

    # ------------------------------------------------------------------ creation
    @classmethod
    def _define(cls, group: zarr.Group, config: Any) -> None:  # pragma: no cover - abstract
        """Hook: attributes, arrays (the commit array with fill -1) and initial rows of a new store."""
        raise NotImplementedError

    @classmethod
    def _create(cls, path_or_url: str | Path, config: Any, overwrite: bool = False, fsync: bool | None = None):
        """Create an empty store atomically (see the module docstring).

        Raises:
            StoreError: a store (or anything else) is already there and ``overwrite`` is
                False; something that is no store is never overwritten.
        """
        url = str(path_or_url)
        state = store_state(url, cls.reader_cls.commit_array)
        if state == "foreign":
            raise StoreError(f"{url}: holds something that is no intact store; nothing was changed (check it with "
                             "`pointillist validate`, or choose a new path)")
        if state == "store" and not overwrite:
            raise StoreError(f"{url}: a store already exists (append to it, or overwrite)")
        if is_remote(url):
            if state != "absent":  # an interrupted creation, or an overwrite
                st = StagedStore(base_store(url, read_only=False), fsync)
                for key in list_keys(st._store):
                    st.remove_sync(key)
            cls._build(url, config, fsync)
            return cls.open(url, fsync)
        final = Path(url.removeprefix("file://"))
        final.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{socket.gethostname()}-{os.getpid()}"
        for p in final.parent.glob(f".{final.name}.*"):  # leftovers of killed creators
            m = re.search(r"\.(?:creating|replaced)-(.+)-(\d+)$", p.name)
            if m and not _pid_alive(m.group(1), int(m.group(2))):
                shutil.rmtree(p, ignore_errors=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.creating-{tag}")
        trash = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.replaced-{tag}")
        try:
            cls._build(str(tmp), config, fsync)
            if state != "absent":
                _fault_point("rename", str(final))
                os.rename(final, trash)
            _fault_point("rename", str(final))
            os.rename(tmp, final)
            if resolve_fsync(fsync):
                fd = os.open(final.parent, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(trash, ignore_errors=True)
        return cls.open(final, fsync)

    @classmethod
    def _build(cls, url: str, config: Any, fsync: bool | None) -> None:
        st = StagedStore(base_store(url, read_only=False), fsync)
        with _write_config(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(st, mode="w-", zarr_format=3)
            cls._define(g, config)
            commit_name = cls.reader_cls.commit_array
            arrays = {name: g[name] for name in member_arrays(g)}
            m = Manifest(cls.reader_cls.format_version, cls.reader_cls.store_type, attributes_sha256(dict(g.attrs)),
                         {n: metadata_fingerprint(read_raw(st, f"{n}/zarr.json")) for n in arrays})
            # the commit array's first value, written last, makes the empty store valid
            st.hold = lambda key: (key_index(key) or ("",))[0] == commit_name
            commit = arrays[commit_name]
            commit[:] = np.zeros(commit.shape, commit.dtype)
            for key, (sha, n) in st.written.items():
                if key_index(key):
                    m.chunks[key] = {"sha256": sha, "bytes": n}
            for key, data in st.held.items():
                m.chunks[key] = {"sha256": sha256_bytes(data), "bytes": len(data)}
            cls._prune_extra(m.extra, 0)
            st.barrier()
            st.put_sync(MANIFEST, m.to_bytes())
            st.barrier()
            for key in sorted(st.held, key=lambda k: -key_index(k)[1]):
                st.put_sync(key, st.held.pop(key))
            st.barrier()
            zarr.consolidate_metadata(st)
            st.barrier()

