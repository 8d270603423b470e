"""Sections of the dataset card (``DATASET.md``, :mod:`pointillist_data.store.card`) that
tell a researcher how to use the store: how to load it (with code that runs against the
store as written: ``tests/test_dataset_card.py`` executes it), what every array holds
(shape, dtype, units, frame), the token vocabulary, and the FLAME model and code version in
words. Pure functions of the group attributes and the manifest entries, like the card."""

from __future__ import annotations

from typing import Any

__all__ = ["STORE_PLACEHOLDER", "HTTP_PLACEHOLDER", "how_to_load_lines", "array_dictionary_lines", "vocabulary_lines",
           "flame_text", "code_text", "python_blocks"]

#: the store path in the card's code (the card cannot know where the store will be read from)
STORE_PLACEHOLDER = "path/to/store.zarr"
HTTP_PLACEHOLDER = "https://example.org/datasets/store.zarr"

# (array, shape, dtype, units, frame / meaning): the layout of format 1.x token stores
# (pointillist_data/store/write.py); S samples, T tokens, N points in all, H x W crops
ARRAYS: tuple[tuple[str, str, str, str, str], ...] = (
    ("tokens", "(T,)", "uint16", "token ids (vocabulary below)",
     "sample i: `tokens[offsets[i]:offsets[i+1]]` (exactly, from format 1.2), `S S S S x y z b ... E E E E`"),
    ("offsets", "(S+1,)", "int64", "token index", "start of sample i's tokens; `offsets[S]` is the end"),
    ("point_offsets", "(S+1,)", "int64", "row index", "start of sample i's rows in the per-point arrays"),
    ("point_count", "(S,)", "int32", "points", "points of sample i"),
    ("subject_id", "(S,)", "string", "-", "participant id of sample i"),
    ("points", "(N, 3)", "float32", "m",
     "Gaussian centres in the canonical FLAME frame (zero expression and pose; y up, face towards +z), "
     "in token order"),
    ("binding", "(N,)", "int32", "FLAME face index", "face the Gaussian is bound to, `0 .. num_faces - 1`"),
    ("rgb", "(N, 3)", "float32", "0..1", "colour (from the degree-0 spherical harmonic)"),
    ("opacity", "(N,)", "float32", "0..1", "activated opacity"),
    ("scale", "(N, 3)", "float32", "m", "activated, global (canonical frame) axis lengths"),
    ("rotation", "(N, 4)", "float32", "unit quaternion", "global orientation in the canonical frame, `w x y z`"),
    ("flame_shape", "(S, 300)", "float32", "FLAME shape coefficients", "the identity's shape (betas)"),
    ("image", "(S, H, W, 3)", "uint8", "sRGB 0..255", "frontal portrait crop (the AR model's condition)"),
)


def _split_for_code(splits: dict[str, int]) -> str:
    """The split the card's code trains on: always ``train`` (research integrity: a store whose
    samples are all held out is for evaluation, and the card says so instead of training on it)."""
    return "train"


def how_to_load_lines(attrs: dict[str, Any], splits: dict[str, int]) -> list[str]:
    """``## How to load``: the install extra, ``SampleDataset`` + ``collate``,
    ``TokenWindowDataset`` with a DataLoader and under DDP, the split, HTTP and S3.
    ``splits``: samples per split name."""
    split = _split_for_code(splits)
    held = sorted(s for s in splits if s != split)
    per = ", ".join(f"`{k}`: {v}" for k, v in sorted(splits.items())) or "none"
    return [
        "## How to load", "",
        "Install the package with the `s3` extra (S3 and HTTP reads); plain local reads need no extra:", "",
        "```bash", 'pip install -e ".[s3]"     # in a checkout of pointillist', "```", "",
        f"Every sample records its split ({per}); train on `split=\"{split}\"`"
        + (f" and keep {', '.join(f'`{h}`' for h in held)} for evaluation" if held else "")
        + "." + ("" if not splits or splits.get(split) else
                 f" **This store holds no `{split}` sample: it is for evaluation only** (the code below then "
                 "yields nothing to train on; never train on the held-out identities).")
        + " Whole samples (map-style) and 12000-token training windows (paper section 4.1):", "",
        "```python",
        "import functools",
        "import torch",
        "from pointillist_data.store import SampleDataset, TokenWindowDataset, collate", "",
        f'STORE = "{STORE_PLACEHOLDER}"   # this folder, or its https:// or s3:// URL', "",
        f'train = SampleDataset(STORE, split="{split}")   # filters too: where="psnr >= 28 and points > 1000"',
        "batches = torch.utils.data.DataLoader(train, batch_size=2, shuffle=True,",
        "                                      collate_fn=functools.partial(collate, pad_token=train.pad))",
        "batch = next(iter(batches))",
        "# tokens (B, Tmax) int64 + token_mask; points (B, Nmax, 3) m + point_mask; binding, rgb, opacity, scale,",
        "# rotation (B, Nmax, ...); point_count (B,); flame_shape (B, 300); image (B, H, W, 3) uint8; subject_id",
        "",
        f'windows = TokenWindowDataset(STORE, window=12000, split="{split}", batch_size=8, seed=0,',
        "                             with_conditioning=True)",
        "for epoch in range(2):",
        "    windows.set_epoch(epoch)",
        "    for b in windows.loader(num_workers=2):   # a DataLoader cutting batches of the dataset's batch_size",
        "        tokens, loss_mask = b[\"tokens\"], b[\"loss_mask\"]   # (8, 12000) int64 / bool; image, flame_shape",
        "        windows.advance(b)                   # windows.state_dict() then resumes exactly here",
        "```", "",
        "Under DDP (`torchrun --nproc-per-node G train.py`) each rank reads its own share of every epoch (the same "
        "number of windows on every rank); rank and world size come from `torch.distributed` once the process "
        "group is initialised, or are given:", "",
        "```python",
        "import os",
        f'shard = TokenWindowDataset(STORE, window=12000, split="{split}", batch_size=8, seed=0,',
        '                           rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)))',
        "```", "",
        "Streaming, read-only: HTTP(S) from a server that answers `Range` requests (`pip install rangehttpserver "
        "&& python -m RangeHTTPServer 8000` in the folder holding the store; Python's `http.server` does not), or "
        "S3 (`AWS_ENDPOINT_URL` for MinIO and other S3-compatible servers):", "",
        "```python",
        f'remote = SampleDataset("{HTTP_PLACEHOLDER}", split="{split}")',
        "```", "",
        "```python",
        f's3 = TokenWindowDataset("s3://my-bucket/store.zarr", window=12000, split="{split}")',
        "```", "",
    ]


def array_dictionary_lines(attrs: dict[str, Any]) -> list[str]:
    """``## Arrays``: name, shape, dtype, units and frame of every array, then the bin size
    of the quantisation box."""
    L = ["## Arrays", "",
         "A plain Zarr v3 group; every array grows along its first axis (S samples, T tokens, N points in all, "
         "H x W portrait crops).", "",
         "| array | shape | dtype | units | frame / meaning |", "|---|---|---|---|---|"]
    L += [f"| `{n}` | {s} | {d} | {u} | {m} |" for n, s, d, u, m in ARRAYS]
    box = attrs.get("quant_box") or {}
    lo, hi = box.get("lo"), box.get("hi")
    bins = int((attrs.get("vocabulary") or {}).get("num_bins", 1024))
    if lo and hi:
        size = ", ".join(f"{(b - a) / bins * 1000:.3g}" for a, b in zip(lo, hi, strict=True))
        L += ["", f"Token coordinates quantise the box `lo` {lo} to `hi` {hi} (m, canonical frame) into {bins} "
                  f"bins per axis: bin size x, y, z = {size} mm; a bin decodes to its centre."]
    return L + [""]


def vocabulary_lines(attrs: dict[str, Any]) -> list[str]:
    """``## Vocabulary``: the token id ranges as a table."""
    v = attrs.get("vocabulary") or {}
    if not v:
        return []
    nb, nf = int(v["num_bins"]), int(v["num_faces"])
    return ["## Vocabulary", "",
            f"{v['size']} token ids. A point is 4 tokens `x y z b`; a sample's points are sorted by "
            f"{attrs.get('token_order', 'yzx, then binding')} (bottom to top).", "",
            "| ids | token | meaning |", "|---|---|---|",
            f"| 0 - {nb - 1} | x, y, z | coordinate bin (by position in the point's 4 tokens) |",
            f"| {nb} - {nb + nf - 1} | b | binding: `{nb}` + FLAME face index |",
            f"| {v['start']} | S | start; every sequence begins with 4 |",
            f"| {v['end']} | E | end; every sequence ends with 4 |",
            f"| {v['pad']} | PAD | padding (collated batches, windows past a sequence's end) |", ""]


def flame_text(flame: Any) -> str:
    """A FLAME identity (:func:`pointillist_data.provenance.flame_identity`) in words."""
    if not isinstance(flame, dict):
        return "not recorded"
    if flame.get("kind") == "bundled":
        sha = str(flame.get("basis_sha256") or "")[:12]
        return (f"bundled demo head {flame.get('name')} (builder version {flame.get('version')}, basis "
                f"{flame.get('basis')}" + (f", sha256 {sha}..." if sha else "") + ")")
    sha = str(flame.get("sha256") or "")[:16]
    return f"file {flame.get('file')}" + (f" (sha256 {sha}...)" if sha else "")


def code_text(code: Any) -> str:
    """A code version (:func:`pointillist_data.provenance.code_version`) in words."""
    if not isinstance(code, dict):
        return "not recorded"
    commit = code.get("git_commit")
    return (f"{code.get('package', 'pointillist')} {code.get('version', '?')}"
            + (f", git commit {str(commit)[:12]}" if commit else ", no git commit recorded")
            + (" with uncommitted changes" if code.get("git_dirty") else ""))


def python_blocks(markdown: str, section: str = "## How to load") -> list[str]:
    """The ```` ```python ```` blocks of one section of a card (for tests and tools)."""
    text = markdown.split(section, 1)[-1].split("\n## ", 1)[0]
    blocks, cur = [], None
    for line in text.splitlines():
        if cur is None and line.strip() == "```python":
            cur = []
        elif cur is not None and line.strip() == "```":
            blocks.append("\n".join(cur))
            cur = None
        elif cur is not None:
            cur.append(line)
    return blocks
