"""Whole-store checks shared by every store type (what ``pointillist validate`` runs first)."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec

from ..progress import NULL_PROGRESS, Progress
from .base import (
    MANIFEST,
    IncompleteStoreError,
    Manifest,
    MetadataError,
    Problem,
    StoreError,
    StoreReader,
    attributes_sha256,
    base_store,
    key_index,
    metadata_fingerprint,
    metadata_problem,
    object_keys,
    object_length,
    object_problem,
    open_group,
    read_raw,
)
from .group import child_nodes
from .remote import raise_if_transport

__all__ = ["check_store"]


def check_store(reader_cls: type[StoreReader], path_or_url: str | Path, progress: Progress | None = None
                ) -> tuple[StoreReader | None, list[Problem], list[str]]:
    """:func:`_check_store`; a read of a remote store that fails in transport raises
    :class:`~pointillist_data.store.remote.RemoteReadError` instead of being reported as a
    problem (an intact store is never called corrupt because the network failed)."""
    try:
        return _check_store(reader_cls, path_or_url, progress)
    except Exception as e:
        raise_if_transport(e, path_or_url)
        raise


def _check_store(reader_cls: type[StoreReader], path_or_url: str | Path, progress: Progress | None = None
                 ) -> tuple[StoreReader | None, list[Problem], list[str]]:
    """Check a store's manifest, group attributes, array metadata and every stored object
    of the committed rows; never stops at the first problem.

    Returns:
        ``(reader, problems, notes)``: the reader (``verify=False``; ``None`` when the
        committed state cannot be read), every problem found, and notes that are no
        problem (leftovers of an interrupted append, which the next append removes).

    Raises:
        StoreNotFoundError: no store there; IncompleteStoreError: its creation was interrupted.

    ``progress`` reports the checksummed objects (reading them is the long part: every byte).
    """
    url = str(path_or_url)
    problems: list[Problem] = []
    notes: list[str] = []
    g = None
    try:
        g, fs, root = open_group(url, "r")
        zstore = g.store
    except MetadataError as e:  # the objects can still be checked from their raw bytes
        fs, root = fsspec.core.url_to_fs(url)
        root, zstore = root.rstrip("/"), base_store(url, read_only=True)
        problems.append(Problem("group", "zarr.json", str(e).split("zarr.json: ", 1)[-1]))
    try:
        data = read_raw(zstore, MANIFEST)
        if data is None:
            raise StoreError(f"{root}/{MANIFEST}: missing")
        m: Manifest | None = Manifest.parse(data, root)
    except StoreError as e:
        problems.append(Problem(MANIFEST, "", str(e).split(f"{MANIFEST}: ", 1)[-1]))
        m = None
    # every array's metadata, from its raw bytes, before anything opens the array
    fingerprinted = m is not None and not m.legacy
    names = sorted(set(child_nodes(zstore)) | set(m.arrays if fingerprinted else ()))
    bad: dict[str, Problem] = {}
    for name in names:
        raw = read_raw(zstore, f"{name}/zarr.json")
        text = metadata_problem(raw, m.arrays.get(name) if fingerprinted else (
            metadata_fingerprint(raw) if _is_json(raw) else ""))
        if text is not None:
            bad[name] = Problem(name, f"{name}/zarr.json", "array listed in the manifest is missing"
                                if text == "missing" else text)
    if fingerprinted and g is not None:
        problems += _group_problems(read_raw(zstore, "zarr.json"), m, bad)
    r: StoreReader | None = None
    ext: dict[str, int] | None = None
    if g is not None:
        try:
            r = reader_cls(g, fs, root, verify=False)
            ext = r.extents()
        except IncompleteStoreError:
            raise
        except MetadataError as e:  # a damaged shape (others are listed in `bad`)
            p = getattr(e, "problem", None)
            if p is None or p.array not in bad:
                problems.append(p or Problem("store", "", str(e)))
        except Exception as e:  # an undecodable commit array or row index, a damaged store
            raise_if_transport(e, path_or_url, "the committed rows")
            what = "committed samples" if r is None else "committed rows"
            problems.append(Problem(reader_cls.commit_array if r is None else "store", "",
                                    f"{what} unreadable ({type(e).__name__}: {e})"))
    # damaged metadata affects every sample with rows in the array: the committed ones, or
    # (when the committed state is unreadable) those the manifest lists
    listed = m.extra.get("samples", []) if m is not None else []
    listed_ids = [str(e.get("subject_id", "")) for e in listed if isinstance(e, dict)]
    if r is not None and r.num_samples:
        S = r.num_samples
        ids = r.sample_names(0, S) if "subject_id" not in bad else listed_ids[:S]
    else:
        S, ids = len(listed), listed_ids
    for p in bad.values():
        if S:
            p.samples, p.subjects = (0, S), ids
    problems[0:0] = list(bad.values())
    if m is None:
        return r, problems, notes
    if m.legacy:
        notes.append(f"format {m.format_version} manifest: only the per-point shards are checksummed")
    beyond = 0
    with (progress or NULL_PROGRESS).task(f"checksums {root}", total=len(m.chunks)) as task:
        for key in sorted(m.chunks):
            task.advance()
            ki = key_index(key)
            if ki is None or (ext is not None and ki[0] not in ext):
                problems.append(Problem(key.split("/")[0], key, f"listed in {MANIFEST}, not an object of the store"))
                continue
            rows_known = r is not None and ki[0] not in bad
            if rows_known and ext is not None and ki[1] * object_length(r.array(ki[0])) >= ext[ki[0]]:
                beyond += 1  # an interrupted append's; never read
                continue
            problem = object_problem(zstore, m, key)
            if problem is not None:
                if not rows_known:  # which rows the object holds is unknown
                    problems.append(Problem(ki[0], key, problem))
                else:
                    n = object_length(r.array(ki[0]))
                    problems.append(r.problem(ki[0], key, problem, ki[1] * n, (ki[1] + 1) * n))
    if beyond:
        notes.append(f"{beyond} object(s) of an interrupted append beyond the committed rows (the next append "
                     "removes them)")
    if r is None or ext is None or m.legacy:
        return r, problems, notes
    for name in names:
        if name in bad or name not in ext:
            continue
        arr = r.array(name)
        rows = ext.get(name, 0)
        if arr.shape[0] < rows:
            problems.append(Problem(name, name, f"holds {arr.shape[0]} rows, {rows} are committed",
                                    (0, r.num_samples) if r.num_samples else None))
            continue
        for key in object_keys(arr, 0, rows):
            if key not in m.chunks:
                n = object_length(arr)
                k = key_index(key)[1]
                problems.append(r.problem(name, key, object_problem(zstore, m, key) or "not listed",
                                          k * n, min((k + 1) * n, rows)))
    for name in m.arrays:
        if name not in ext and name not in bad:
            problems.append(Problem(name, f"{name}/zarr.json", "array listed in the manifest is not an array of "
                                    f"a '{reader_cls.store_type}' store"))
    return r, problems, notes


def _is_json(raw: bytes | None) -> bool:
    try:
        return raw is not None and isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _group_problems(raw: bytes | None, m: Manifest, bad: dict[str, Problem]) -> list[Problem]:
    """The group ``zarr.json`` (parsed) against the manifest: the attributes' fingerprint, and
    the consolidated metadata that plain zarr readers use (its shapes may lag, not the rest)."""
    meta = json.loads(raw)
    out = []
    if m.attributes_sha256 != attributes_sha256(meta.get("attributes", {})):
        out.append(Problem("attributes", "zarr.json", "group attributes differ from the manifest's fingerprint"))
    consolidated = (meta.get("consolidated_metadata") or {}).get("metadata") or {}
    for name, want in sorted(m.arrays.items()):
        entry = consolidated.get(name)
        if consolidated and name not in bad and (not isinstance(entry, dict) or
                                                 metadata_fingerprint(json.dumps(entry).encode()) != want):
            out.append(Problem("group", "zarr.json", f"consolidated metadata of '{name}' differs from the manifest's "
                               "fingerprint (plain zarr readers use it)"))
    return out
