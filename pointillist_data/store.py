"""Sharded Zarr v3 token stores: the dataset format researchers consume.

One Zarr v3 group per dataset (format version :data:`FORMAT_VERSION`)::

    tokens         (T,)        uint16   all sequences, sharded; PAD fills each batch to a shard boundary
    offsets        (S + 1,)    int64    token start of sample i; fill -1 (not yet committed); written LAST
    point_offsets  (S + 1,)    int64    row start of sample i in the per-point arrays
    points         (P, 3)      float32  canonical global positions (metres), in token order
    binding        (P,)        int32    FLAME face index per point
    rgb            (P, 3)      float32  colour (SH DC as RGB)
    opacity        (P,)        float32  activated opacity
    scale          (P, 3)      float32  activated global scale (metres)
    rotation       (P, 4)      float32  global wxyz quaternion
    point_count    (S,)        int32
    subject_id     (S,)        str
    flame_shape    (S, 300)    float32  tracked identity coefficients
    image          (S, H, W, 3) uint8   conditioning frontal crop, one chunk per sample

Group attributes: ``format_version``, ``vocabulary``, ``quant_box``, ``canonical`` (the
canonical FLAME parameters used), ``shards`` (shard sizes), ``created_by``.
``manifest.json`` beside the arrays lists every shard file with its sha256.

Consistency: a writer appends whole shards only (a shard holding committed samples is
never rewritten), then the per-sample arrays, then the manifest, and the ``offsets``
values last. A reader counts the committed samples from the leading valid entries of
``offsets`` (unwritten entries read as -1), so it never sees a torn sample.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr

from .errors import PointillistError
from .tokens import FRAME, QuantBox, TokenGrammarError, Vocabulary, check_grammar, decode

__all__ = ["TokenStore", "StoreError", "ShardChecksumError", "FORMAT_VERSION", "POINT_ARRAYS", "SAMPLE_ARRAYS",
           "validate_store", "open_group", "shard_keys", "sha256_bytes"]

FORMAT_VERSION = "1.0"
POINT_ARRAYS = {"points": 3, "binding": 0, "rgb": 3, "opacity": 0, "scale": 3, "rotation": 4}
SAMPLE_ARRAYS = ("point_count", "subject_id", "flame_shape", "image")
MANIFEST = "manifest.json"


class StoreError(PointillistError, ValueError):
    """A token store is missing, malformed or inconsistent."""


class ShardChecksumError(StoreError):
    """A shard file's sha256 differs from the manifest (the message names the shard)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_group(path_or_url: str | Path, mode: str = "r") -> tuple[zarr.Group, fsspec.AbstractFileSystem, str]:
    """Open a Zarr v3 group on a local path or any fsspec URL; also return (fs, root path)."""
    url = str(path_or_url)
    fs, root = fsspec.core.url_to_fs(url)
    if "://" in url:
        from zarr.storage import FsspecStore

        # zarr needs its own asynchronous filesystem instance on its event loop; sharing
        # fsspec's synchronous one across loops fails for async backends such as s3fs
        store = FsspecStore.from_url(url, read_only=(mode == "r"))
    else:
        store = url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "r":
            try:
                g = zarr.open_consolidated(store, mode="r", zarr_format=3)
            except Exception:
                g = zarr.open_group(store, mode="r", zarr_format=3)
        else:
            # never consolidated for writing: its cached shapes go stale after a resize
            g = zarr.open_group(store, mode=mode, zarr_format=3, use_consolidated=False)
    return g, fs, root


def shard_keys(arr: zarr.Array, start: int, stop: int) -> list[str]:
    """Relative keys (``name/c/i[/j...]``) of the shards covering rows ``[start, stop)``."""
    shard = arr.shards[0] if arr.shards else arr.chunks[0]
    rest = "/".join("0" for _ in arr.shape[1:])
    name = arr.path.split("/")[-1]
    return [f"{name}/c/{k}" + (f"/{rest}" if rest else "") for k in range(start // shard, -(-stop // shard))]


def _committed(offsets: np.ndarray) -> int:
    """Number of committed samples: leading valid, non-decreasing entries minus one."""
    ok = offsets >= 0
    n = int(np.argmin(ok)) if not ok.all() else len(offsets)
    return max(0, n - 1)


class TokenStore:
    """Read access to a token store (``store[i]``, ``len``, iteration, ``to_points(i)``).

    Args:
        group: the opened Zarr group.
        fs, root: fsspec filesystem and root path (for the manifest and checksums).
        verify: check each shard's sha256 against the manifest the first time it is read.
    """

    def __init__(self, group: zarr.Group, fs: fsspec.AbstractFileSystem, root: str, verify: bool = True) -> None:
        self.group, self.fs, self.root, self.verify = group, fs, root.rstrip("/"), verify
        attrs = dict(group.attrs)
        if attrs.get("format_version") is None:
            raise StoreError(f"{root}: not a pointillist token store (no format_version attribute)")
        if str(attrs["format_version"]).split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise StoreError(f"{root}: format version {attrs['format_version']} is not readable by {FORMAT_VERSION}")
        self.attrs = attrs
        self.vocab = Vocabulary(**{k: attrs["vocabulary"][k] for k in ("num_bins", "num_faces")})
        self.box = QuantBox.from_dict(attrs["quant_box"])
        self.offsets = np.asarray(group["offsets"][:], dtype=np.int64)
        self.num_samples = _committed(self.offsets)
        self.offsets = self.offsets[: self.num_samples + 1]
        self.point_offsets = np.asarray(group["point_offsets"][: self.num_samples + 1], dtype=np.int64)
        self.point_count = np.asarray(group["point_count"][: self.num_samples], dtype=np.int64)
        self._manifest: dict | None = None
        self._verified: set[str] = set()

    @classmethod
    def open(cls, path_or_url: str | Path, verify: bool = True) -> TokenStore:
        """Open a store on a local path or an fsspec URL (``s3://``, ``memory://``...).

        Raises:
            StoreError: no store there, or an unreadable format version.
        """
        try:
            g, fs, root = open_group(path_or_url, "r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as e:
            raise StoreError(f"{path_or_url}: no token store ({e})") from e
        return cls(g, fs, root, verify)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            p = f"{self.root}/{MANIFEST}"
            if not self.fs.exists(p):
                raise StoreError(f"{self.root}: {MANIFEST} missing")
            self._manifest = json.loads(self.fs.cat_file(p))
        return self._manifest

    def _verify(self, arr: zarr.Array, start: int, stop: int) -> None:
        if not self.verify:
            return
        for key in shard_keys(arr, start, stop):
            if key in self._verified:
                continue
            entry = self.manifest["shards"].get(key)
            if entry is None:
                self._manifest = None
                entry = self.manifest["shards"].get(key)
            if entry is None:
                raise ShardChecksumError(f"{self.root}: shard {key} is not listed in {MANIFEST}")
            data = self.fs.cat_file(f"{self.root}/{key}")
            if sha256_bytes(data) != entry["sha256"]:
                raise ShardChecksumError(f"{self.root}: shard {key} is corrupted (sha256 mismatch with {MANIFEST})")
            self._verified.add(key)

    def _check(self, i: int) -> int:
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for a store of {self.num_samples}")
        return i % self.num_samples

    def token_range(self, i: int) -> tuple[int, int]:
        """``[start, stop)`` of sample ``i`` in ``tokens``."""
        i = self._check(i)
        start = int(self.offsets[i])
        return start, start + 4 * int(self.point_count[i]) + 2 * FRAME

    def tokens(self, i: int) -> np.ndarray:
        """Token sequence ``(4N + 8,)`` uint16 of sample ``i``."""
        s, e = self.token_range(i)
        arr = self.group["tokens"]
        self._verify(arr, s, e)
        return np.asarray(arr[s:e])

    def read_all_tokens(self) -> np.ndarray:
        """The committed token region ``tokens[: offsets[-1]]`` (one sequential read)."""
        end = int(self.offsets[-1]) if self.num_samples else 0
        arr = self.group["tokens"]
        self._verify(arr, 0, end)
        return np.asarray(arr[:end])

    def point_attributes(self, i: int) -> dict[str, np.ndarray]:
        i = self._check(i)
        s = int(self.point_offsets[i])
        e = s + int(self.point_count[i])
        out = {}
        for name in POINT_ARRAYS:
            arr = self.group[name]
            self._verify(arr, s, e)
            out[name] = np.asarray(arr[s:e])
        return out

    def subject_ids(self) -> list[str]:
        return [str(s) for s in self.group["subject_id"][: self.num_samples]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i``: ``subject_id``, ``tokens``, ``point_count``, per-point arrays
        (``points binding rgb opacity scale rotation``), ``flame_shape (300,)``, ``image (H, W, 3)``."""
        i = self._check(i)
        out: dict[str, Any] = {"subject_id": str(self.group["subject_id"][i]), "tokens": self.tokens(i),
                               "point_count": int(self.point_count[i])}
        out.update(self.point_attributes(i))
        out["flame_shape"] = np.asarray(self.group["flame_shape"][i])
        out["image"] = np.asarray(self.group["image"][i])
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def to_points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded ``(points (N, 3) float32, binding (N,) int64)`` of sample ``i``'s tokens."""
        return decode(self.tokens(i), self.box, self.vocab)


def validate_store(path_or_url: str | Path) -> dict[str, Any]:
    """Check a store: every shard's checksum, the grammar of every sequence, monotone offsets,
    PAD between samples, point counts, and per-point rows.

    Returns:
        A summary (``samples``, ``tokens``, ``points``, ``shards_checked``).

    Raises:
        StoreError / ShardChecksumError / TokenGrammarError: the first problem, named.
    """
    st = TokenStore.open(path_or_url, verify=True)
    manifest = st.manifest
    for key, entry in manifest["shards"].items():
        p = f"{st.root}/{key}"
        if not st.fs.exists(p):
            raise ShardChecksumError(f"{st.root}: shard {key} listed in {MANIFEST} is missing")
        if sha256_bytes(st.fs.cat_file(p)) != entry["sha256"]:
            raise ShardChecksumError(f"{st.root}: shard {key} is corrupted (sha256 mismatch with {MANIFEST})")
        st._verified.add(key)  # the reads below need not hash it again
    if np.any(np.diff(st.offsets) < 0) or np.any(np.diff(st.point_offsets) < 0):
        raise StoreError(f"{st.root}: offsets are not monotone")
    tokens = st.read_all_tokens()
    pad = st.vocab.pad
    ids = st.subject_ids()
    if len(set(ids)) != len(ids):
        raise StoreError(f"{st.root}: duplicate subject ids")
    for i in range(len(st)):
        s, e = st.token_range(i)
        nxt = int(st.offsets[i + 1])
        if e > nxt:
            raise StoreError(f"{st.root}: sample {i} ({ids[i]}) overruns the next offset")
        try:
            check_grammar(tokens[s:e], st.vocab)
        except TokenGrammarError as err:
            raise TokenGrammarError(s + err.position, f"sample {i} ({ids[i]}): {err}") from None
        if np.any(tokens[e:nxt] != pad):
            raise StoreError(f"{st.root}: non-PAD tokens between sample {i} and the next")
        if int(st.point_offsets[i + 1]) - int(st.point_offsets[i]) < st.point_count[i]:
            raise StoreError(f"{st.root}: per-point rows of sample {i} overrun")
    return {"samples": len(st), "tokens": int(sum(4 * st.point_count + 8)), "points": int(st.point_count.sum()),
            "shards_checked": len(manifest["shards"]), "format_version": st.attrs["format_version"]}


def local_path(path_or_url: str | Path) -> Path | None:
    """The local path of a store, or ``None`` for a remote URL."""
    s = str(path_or_url)
    return None if "://" in s and not s.startswith("file://") else Path(s.removeprefix("file://"))
