"""The dataset card's researcher sections (issue 27 item 9): its "How to load" code runs as
written against the store (locally and over HTTP), the array dictionary matches the arrays
stored, the vocabulary table matches the spec's ids, provenance reads as words, and
DATASET.png prints the values of a small store instead of histograms."""

from __future__ import annotations

import io

import numpy as np
import pytest
from http_range import serve
from PIL import Image
from store_samples import SMALL, make_sample

from pointillist_data.store.card import FEW_SAMPLES, card_markdown, quality_png
from pointillist_data.store.card_sections import ARRAYS, HTTP_PLACEHOLDER, STORE_PLACEHOLDER, python_blocks
from pointillist_data.store.token_store import TokenStore
from pointillist_data.store.write import StoreConfig, TokenStoreWriter

BAR = (70, 110, 200)  # the histogram bars' colour


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "ds.zarr"
    samples = [make_sample(i, n) for i, n in enumerate([700, 400, 300])]
    flame = {"kind": "bundled", "name": "demo-head", "version": 3, "basis": "basis-v1", "basis_sha256": "ab" * 32}
    code = {"package": "pointillist", "version": "0.1.0", "git_commit": "0123456789abcdef" * 2, "git_dirty": True}
    notes = {s.subject_id: {"split": "test" if i == 2 else "train",
                            "provenance": {"flame": flame, "code": code, "sequences": ["EXP-1", "EMO-2"]}}
             for i, s in enumerate(samples)}
    TokenStoreWriter.create(path, StoreConfig(**SMALL)).append(samples, annotations=notes)
    return path


def test_how_to_load_code_runs_as_written(store):
    st = TokenStore.open(store)
    card = st.document("DATASET.md").decode()
    blocks = python_blocks(card)
    assert len(blocks) == 4 and STORE_PLACEHOLDER in blocks[0] and HTTP_PLACEHOLDER in blocks[2], blocks
    assert 'pip install -e ".[s3]"' in card and 'split="train"' in blocks[0]
    ns: dict = {}
    exec(compile(blocks[0].replace(STORE_PLACEHOLDER, str(store)), "DATASET.md", "exec"), ns)
    # what the snippet built is the train split, read back exactly
    assert ns["train"].subject_ids == ["000", "001"]
    b = ns["batch"]
    assert b["tokens"].shape[0] == 2 and b["points"].shape[2] == 3 and b["image"].shape[1:] == (8, 8, 3)
    for j, sid in enumerate(b["subject_id"]):
        k = st.subject_ids().index(sid)
        np.testing.assert_array_equal(b["tokens"][j, b["token_mask"][j]].numpy(), st.tokens(k))
    w = ns["windows"]
    assert w.subject_ids == ["000", "001"] and w.state_dict()["epoch"] == 1 and w.state_dict()["consumed"] > 0
    exec(compile(blocks[1], "DATASET.md", "exec"), ns)  # the DDP form, world size 1 outside torchrun
    assert ns["shard"].world_size == 1 and ns["shard"].subject_ids == ["000", "001"]
    with serve(store.parent) as base:
        exec(compile(blocks[2].replace(HTTP_PLACEHOLDER, f"{base}/{store.name}"), "DATASET.md", "exec"), ns)
        assert ns["remote"].subject_ids == ["000", "001"] and len(ns["remote"][0]["points"]) == 700
    assert "s3://" in blocks[3] and "TokenWindowDataset(" in blocks[3]


def test_array_dictionary_and_vocabulary_match_the_store(store):
    st = TokenStore.open(store)
    card = st.document("DATASET.md").decode()
    table = {n: d for n, _, d, _, _ in ARRAYS}
    assert set(table) == set(st.array_names())  # every stored array, and nothing else
    for name in st.array_names():
        arr = st.array(name)
        want = "string" if arr.dtype.kind in "OUT" else str(arr.dtype)
        assert table[name] == want, (name, arr.dtype)
        row = next(ln for ln in card.splitlines() if ln.startswith(f"| `{name}` |"))
        assert f" {want} " in row, row
        dims = [x.strip() for x in next(s for n, s, *_ in ARRAYS if n == name).strip("()").split(",") if x.strip()]
        assert len(dims) == arr.ndim, (name, dims, arr.shape)
        assert all(int(x) == arr.shape[k] for k, x in enumerate(dims) if x.isdigit()), (name, dims, arr.shape)
    # the vocabulary as a table, with the ids of the spec (1024 bins, 10144 FLAME faces)
    assert "| 0 - 1023 | x, y, z |" in card and "| 1024 - 11167 | b |" in card
    assert "| 11168 | S |" in card and "| 11169 | E |" in card and "| 11170 | PAD |" in card
    # the quantisation bin size from the box: 0.4 m / 1024 = 0.391 mm along x
    assert "bin size x, y, z = 0.391, 0.449, 0.391 mm" in card


def test_provenance_reads_as_words(store):
    card = TokenStore.open(store).document("DATASET.md").decode()
    made = card.split("## How it was made", 1)[1].split("\n## ", 1)[0]
    assert "- FLAME model: bundled demo head demo-head (builder version 3, basis basis-v1, sha256 abababababab...) " \
           "(3 samples)" in made
    assert "- code: pointillist 0.1.0, git commit 0123456789ab with uncommitted changes (3 samples)" in made
    assert "- sequences: EXP-1, EMO-2 (3 samples)" in made and "{" not in made


def _bars(png: bytes) -> int:
    return int(np.all(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) == BAR, axis=-1).sum())


def test_png_prints_the_values_below_five_samples():
    entries = [{"subject_id": f"{i:03d}", "points": 100 + 10 * i, "tokens": 4 * (100 + 10 * i) + 8, "split": "train"}
               for i in range(FEW_SAMPLES + 1)]
    few, many = quality_png(entries[:FEW_SAMPLES - 1]), quality_png(entries)
    assert _bars(few) == 0 and _bars(many) > 0  # values printed, not drawn; histograms from five on
    # the printed panel differs with the values (they are written, not a fixed placeholder)
    changed = [dict(e, points=e["points"] + 1) for e in entries[:FEW_SAMPLES - 1]]
    assert quality_png(changed) != few
    assert "n=4" not in card_markdown({}, entries[:4])  # the card itself is unaffected by the picture's form
