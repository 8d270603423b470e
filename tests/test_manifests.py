"""Manifest schemas, examples and splits."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from pointillist_data.manifests import SCHEMAS, make_split, validate_manifest

ROOT = Path(__file__).resolve().parent.parent / "manifests"


def test_checked_in_schemas_match_code():
    for kind, schema in SCHEMAS.items():
        assert json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text()) == schema


@pytest.mark.parametrize("name,kind", [("split_synthetic.json", "split"), ("stage_record_fit.json", "stage_record"),
                                       ("dataset_manifest.json", "dataset_manifest")])
def test_examples_validate(name, kind):
    validate_manifest(json.loads((ROOT / "examples" / name).read_text()), kind)


def test_split_is_deterministic_and_disjoint():
    ids = [f"{i:03d}" for i in range(17, 120)]
    a, b = make_split(ids, 25, seed=4), make_split(list(reversed(ids)), 25, seed=4)
    assert a == b and len(a["test"]) == 25 and len(a["train"]) == len(ids) - 25
    assert not set(a["test"]) & set(a["train"])
    assert make_split(ids, 25, seed=5)["test"] != a["test"]
    with pytest.raises(ValueError, match="cannot hold out"):
        make_split(ids[:3], 25)
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest({**a, "seed": "zero"}, "split")


def test_store_manifest_follows_schema(tmp_path):
    from store_samples import SMALL, make_sample

    from pointillist_data.store.write import StoreConfig, TokenStoreWriter

    w = TokenStoreWriter.create(tmp_path / "s.zarr", StoreConfig(**SMALL))
    w.append([make_sample(0, 100)])
    validate_manifest(json.loads((tmp_path / "s.zarr" / "manifest.json").read_text()), "dataset_manifest")
