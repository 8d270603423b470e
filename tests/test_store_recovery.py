"""Crash safety of token stores: a crash at every storage write of an append and of a
creation, then a re-run, must give the store an uninterrupted run gives, byte for byte;
readers in between see whole committed batches only."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import fsspec
import numpy as np
import pytest
import zarr
from store_samples import SMALL, make_sample

from pointillist_data.store import commit as store_commit
from pointillist_data.store.base import StoreReader, open_group
from pointillist_data.store.check import check_store
from pointillist_data.store.commit import AppendOnlyWriter
from pointillist_data.store.token_store import (
    IncompleteStoreError,
    StoreNotFoundError,
    TokenStore,
    validate_store,
)
from pointillist_data.store.write import StoreConfig, TokenStoreWriter

FIRST = [make_sample(i, n) for i, n in enumerate([300, 2100])]
SECOND = [make_sample(i, n) for i, n in ((2, 40), (3, 1500))]


class Crash(BaseException):
    """The writing process died (a BaseException: no ``except Exception`` handler runs)."""


@contextmanager
def crash_at(monkeypatch, k: int | None):
    """Fail the k-th storage mutation and every later one (a dead process writes nothing
    more); ``k=None`` only counts. Yields the list of mutations seen."""
    seen: list[str] = []

    def hook(op: str, key: str) -> None:
        seen.append(f"{op} {key}")
        if k is not None and len(seen) >= k:
            raise Crash(seen[-1])

    monkeypatch.setattr(store_commit, "_fault_point", hook)
    try:
        yield seen
    finally:
        monkeypatch.setattr(store_commit, "_fault_point", lambda op, key: None)


def snapshot(url) -> dict[str, str]:
    """``{relative key: sha256}`` of every object of a store (local folder or fsspec URL)."""
    fs, root = fsspec.core.url_to_fs(str(url))
    root = root.rstrip("/")
    return {p[len(root) + 1:]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find(root)}


def assert_samples(st: TokenStore, expected) -> None:
    assert st.subject_ids() == [s.subject_id for s in expected]
    for i, s in enumerate(expected):
        got = st[i]
        for name in ("tokens", "points", "binding", "rgb", "opacity", "scale", "rotation", "flame_shape", "image"):
            np.testing.assert_array_equal(got[name], getattr(s, name), err_msg=f"{s.subject_id} {name}")


def test_crash_at_every_write_of_an_append(tmp_path, monkeypatch):
    base = tmp_path / "base.zarr"
    TokenStoreWriter.create(base, StoreConfig(**SMALL)).append(FIRST)
    ref = tmp_path / "ref.zarr"
    shutil.copytree(base, ref)
    with crash_at(monkeypatch, None) as writes:
        TokenStoreWriter.open(ref).append(SECOND)
    n, want = len(writes), snapshot(ref)
    assert n > 10
    committed_at = []
    for k in range(1, n + 1):
        p = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, p)
        with crash_at(monkeypatch, k), pytest.raises(Crash):
            TokenStoreWriter.open(p).append(SECOND)
        # a reader between the crash and the re-run: whole batches, every byte checked
        st = TokenStore.open(p)
        assert len(st) in (2, 4), k
        assert_samples(st, (FIRST + SECOND)[: len(st)])
        if len(st) == 4:
            committed_at.append(k)
        # the re-run, as `pointillist shard` does it
        assert TokenStoreWriter.open(p).append(FIRST + SECOND, skip_existing=True) == 4 - len(st)
        assert snapshot(p) == want, f"crash at write {k} ({writes[k - 1]})"
        # plain zarr, through the consolidated metadata, sees every committed sample again
        assert zarr.open_consolidated(str(p), mode="r")["offsets"].shape == (5,)
        shutil.rmtree(p)
    # the commit is one write: every crash after it leaves the batch committed, none before
    assert committed_at == list(range(committed_at[0], n + 1)) and 1 < committed_at[0] < n
    assert writes[committed_at[0] - 2].startswith("put offsets/")


def test_interrupted_commit_is_never_hidden(tmp_path, monkeypatch):
    """A crash between the write of offsets and the consolidated metadata: readers see the
    committed batch at once; a re-run that appends nothing repairs plain zarr's view."""
    p = tmp_path / "s.zarr"
    TokenStoreWriter.create(p, StoreConfig(**SMALL)).append(FIRST)
    with crash_at(monkeypatch, None) as writes:
        TokenStoreWriter.open(tmp_path / "s.zarr").append([make_sample(9, 10)])
    last = max(i for i, w in enumerate(writes) if w.startswith("put offsets/")) + 1  # the commit
    shutil.rmtree(p)
    TokenStoreWriter.create(p, StoreConfig(**SMALL)).append(FIRST)
    with crash_at(monkeypatch, last + 2), pytest.raises(Crash):  # after the final manifest, before consolidating
        TokenStoreWriter.open(p).append(SECOND)
    assert writes[last + 1] == "put zarr.json"
    assert len(TokenStore.open(p)) == 4
    assert zarr.open_consolidated(str(p), mode="r")["offsets"].shape == (3,)  # stale
    assert TokenStoreWriter.open(p).append(SECOND, skip_existing=True) == 0
    assert zarr.open_consolidated(str(p), mode="r")["offsets"].shape == (5,)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_crash_at_every_write_of_a_creation(tmp_path, monkeypatch, where):
    """Locally the store appears whole or not at all (built under a temporary name, then
    renamed); on an object store (memory://, as S3) an interrupted creation is recognised
    and replaced by the next creation."""
    url = (lambda k: str(tmp_path / f"{k}.zarr")) if where == "local" else \
        (lambda k: f"memory://pointillist-{os.getpid()}-{tmp_path.name}/{k}.zarr")
    cfg = StoreConfig(**SMALL)
    with crash_at(monkeypatch, None) as writes:
        TokenStoreWriter.create(url("ref"), cfg, fsync=where == "local")
    want = snapshot(url("ref"))
    assert len(writes) > 10 and "zarr.json" in want and "offsets/c/0" in want
    for k in range(1, len(writes) + 1):
        u = url(k)
        with crash_at(monkeypatch, k), pytest.raises(Crash):
            TokenStoreWriter.create(u, cfg)
        if where == "local":
            assert not os.path.exists(u) and not list(tmp_path.glob(f".{k}.zarr.*")), k
        else:
            try:
                assert len(TokenStore.open(u)) == 0 and k == len(writes)  # only consolidation was missing
            except (IncompleteStoreError, StoreNotFoundError):
                assert k < len(writes)
                with pytest.raises((IncompleteStoreError, StoreNotFoundError)):
                    validate_store(u)  # never "valid, 0 samples"
        w = TokenStoreWriter.open_or_create(u, cfg)  # the re-run
        assert w.num_samples == 0
        assert snapshot(u) == want, f"crash at write {k} ({writes[k - 1]})"
        validate_store(u)


KILLER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from store_samples import SMALL
    from pointillist_data.store import commit as store_commit
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter
    calls = []
    def die(op, key):
        calls.append(key)
        if len(calls) == int(sys.argv[2]):
            os._exit(9)
    store_commit._fault_point = die
    TokenStoreWriter.create(sys.argv[1], StoreConfig(**SMALL))
""")


def test_killed_creator_leaves_nothing_that_blocks(tmp_path):
    """A creator killed for real leaves its temporary folder; the next creation removes it."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(tests=os.path.dirname(__file__)))
    p = tmp_path / "s.zarr"
    r = subprocess.run([sys.executable, str(script), str(p), "12"], env={**os.environ, "PYTHONPATH": os.getcwd()},
                       capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    assert not p.exists() and len(list(tmp_path.glob(".s.zarr.*.creating-*"))) == 1
    w = TokenStoreWriter.open_or_create(p, StoreConfig(**SMALL))
    w.append(FIRST)
    assert not list(tmp_path.glob(".s.zarr.*"))
    assert_samples(TokenStore.open(p), FIRST)


class CompanionReader(StoreReader):
    """A second store type on the same machinery, as a decoder's supervision store would be:
    ragged per-sample rows (``frames``), a per-sample array, and small chunks so that batches
    share chunks and the commit array spans several."""

    store_type = "test.companion"

    def extents(self):
        S = self.num_samples
        return {"offsets": S + 1, "frames": int(self.offsets[S]), "label": S}

    def sample_bounds(self, name):
        return "boundary" if name == "offsets" else self.offsets if name == "frames" else None


class CompanionWriter(AppendOnlyWriter):
    reader_cls = CompanionReader

    @classmethod
    def _define(cls, g, config):
        g.attrs.update({"format_version": "1.1", "store_type": "test.companion"})
        g.create_array("offsets", shape=(1,), dtype="int64", chunks=(4,), fill_value=-1)
        g.create_array("frames", shape=(0, 2), dtype="float32", chunks=(3, 2))
        g.create_array("label", shape=(0,), dtype="int32", chunks=(2,))

    def append(self, items: list[np.ndarray]) -> None:
        S, end = self.num_samples, self.extents["frames"]
        rows = np.concatenate(items)
        with self.transaction({}):
            a = self.arrays
            a["frames"].resize((end + len(rows), 2))
            a["frames"][end:] = rows
            a["label"].resize((S + len(items),))
            a["label"][S:] = [len(x) for x in items]
            a["offsets"].resize((S + len(items) + 1,))
            a["offsets"][S + 1:] = end + np.cumsum([len(x) for x in items])


def test_a_second_store_type_reuses_the_commit_machinery(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    items = [rng.random((n, 2)).astype(np.float32) for n in (2, 4, 1, 3, 5)]
    base = tmp_path / "base.zarr"
    CompanionWriter._create(base, None).append(items[:2])
    ref = tmp_path / "ref.zarr"
    shutil.copytree(base, ref)
    with crash_at(monkeypatch, None) as writes:
        CompanionWriter.open(ref).append(items[2:])
    want = snapshot(ref)
    for k in range(1, len(writes) + 1):
        p = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, p)
        with crash_at(monkeypatch, k), pytest.raises(Crash):
            CompanionWriter.open(p).append(items[2:])
        g, fs, root = open_group(p)
        r = CompanionReader(g, fs, root)  # checked reads
        assert len(r) in (2, 5)
        np.testing.assert_array_equal(r.read("frames", 0, int(r.offsets[-1])), np.concatenate(items[: len(r)]))
        w = CompanionWriter.open(p)  # the re-run recovers; it appends what is not committed
        if w.num_samples == 2:
            w.append(items[2:])
        assert snapshot(p) == want, f"crash at write {k} ({writes[k - 1]})"
        assert check_store(CompanionReader, p)[1] == []
