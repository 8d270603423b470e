"""Whole-store checks shared by every store type (what ``pointillist validate`` runs first)."""

from __future__ import annotations

from pathlib import Path

from .progress import NULL_PROGRESS, Progress
from .store_base import (
    MANIFEST,
    IncompleteStoreError,
    Manifest,
    Problem,
    StoreError,
    StoreReader,
    attributes_sha256,
    key_index,
    metadata_fingerprint,
    object_keys,
    object_length,
    object_problem,
    open_group,
    read_raw,
)

__all__ = ["check_store"]


def check_store(reader_cls: type[StoreReader], path_or_url: str | Path, progress: Progress | None = None
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
    g, fs, root = open_group(path_or_url, "r")
    zstore, problems, notes = g.store, [], []
    try:
        data = read_raw(zstore, MANIFEST)
        if data is None:
            raise StoreError(f"{root}/{MANIFEST}: missing")
        m: Manifest | None = Manifest.parse(data, root)
    except StoreError as e:
        problems.append(Problem(MANIFEST, "", str(e).split(f"{MANIFEST}: ", 1)[-1]))
        m = None
    r: StoreReader | None = None
    ext: dict[str, int] | None = None
    try:
        r = reader_cls(g, fs, root, verify=False)
        ext = r.extents()
    except IncompleteStoreError:
        raise
    except Exception as e:  # an undecodable commit array or row index, a damaged store
        what = "committed samples" if r is None else "committed rows"
        problems.append(Problem(reader_cls.commit_array if r is None else "store", "",
                                f"{what} unreadable ({type(e).__name__}: {e})"))
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
            if ext is not None and ki[1] * object_length(r.array(ki[0])) >= ext[ki[0]]:
                beyond += 1  # an interrupted append's; never read
                continue
            problem = object_problem(zstore, m, key)
            if problem is not None:
                if r is None:
                    problems.append(Problem(ki[0], key, problem))
                else:
                    n = object_length(r.array(ki[0]))
                    problems.append(r.problem(ki[0], key, problem, ki[1] * n, (ki[1] + 1) * n))
    if beyond:
        notes.append(f"{beyond} object(s) of an interrupted append beyond the committed rows (the next append "
                     "removes them)")
    if r is None or ext is None or m.legacy:
        return r, problems, notes
    if m.attributes_sha256 != attributes_sha256(r.attrs):
        problems.append(Problem("attributes", "zarr.json", "group attributes differ from the manifest's fingerprint"))
    for name in r.array_names():
        arr = r.array(name)
        raw = read_raw(zstore, f"{name}/zarr.json")
        try:
            ok = raw is not None and metadata_fingerprint(raw) == m.arrays.get(name)
        except ValueError:
            ok = False
        if not ok:
            problems.append(Problem(name, f"{name}/zarr.json", "array metadata differs from the manifest's fingerprint"))
        rows = ext.get(name, 0)
        if arr.shape[0] < rows:
            problems.append(Problem(name, name, f"holds {arr.shape[0]} rows, {rows} are committed",
                                    (0, r.num_samples) if r.num_samples else None))
        for key in object_keys(arr, 0, min(rows, arr.shape[0])):
            if key not in m.chunks:
                n = object_length(arr)
                k = key_index(key)[1]
                problems.append(r.problem(name, key, object_problem(zstore, m, key) or "not listed",
                                          k * n, min((k + 1) * n, rows)))
    for name in m.arrays:
        if name not in ext:
            problems.append(Problem(name, f"{name}/zarr.json", "array listed in the manifest is missing"))
    return r, problems, notes
