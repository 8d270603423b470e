"""Sharded Zarr v3 stores: the token store, the supervision store, and how to read them.

Layers, lowest first (each imports only those before it)::

    layout       paths, shard keys, the errors of a damaged store
    guard        bounded reads: a fetched chunk's size (and the id arrays' sha256) before decoding
    group        the Zarr group and its manifest: opening, raw reads, fingerprints, ``Problem``
    base         :class:`StoreReader`: committed state and checksum-verified reads
    commit       atomic, crash-safe appends (new shards per batch, then one manifest rename)
    check        ``validate``: every manifest, metadata file and shard checked from raw bytes
    remote       the same reads over HTTP(S) with Range requests, or S3
    write        :class:`~pointillist_data.store.write.Sample` and the token-store writer
    token_store  :class:`TokenStore` (paper section 4.1: points in yzx order, 1024 bins)
    supervision* the decoder's supervision store (frames, masks, cameras per identity)
    query        the ``--where`` filter language shared by inspect and every dataset
    datasets     :class:`SampleDataset` (map-style) and ``collate``
    loader       :class:`TokenWindowDataset` (resumable, rank- and worker-sharded windows)
    source_images  :class:`SourceImages`: training source images drawn from an identity's views
    card         the dataset card (``README.md`` written next to a store); ``card_sections``
    inspect      ``pointillist inspect``: a summary and a picture of a store

The public names below are loaded on first use, so importing this package costs nothing
(the CLI's ``--help`` stays free of torch and zarr).
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "TokenStore": "token_store",
    "SupervisionStore": "supervision",
    "Sample": "write",
    "SampleDataset": "datasets",
    "collate": "datasets",
    "TokenWindowDataset": "loader",
    "SupervisionDataset": "supervision_dataset",
    "SourceImages": "source_images",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """Load a public name from its module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
