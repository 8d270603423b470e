"""``pointillist inspect`` (issue 27 item 4): ``--json`` prints only valid JSON on stdout (the
picture's path inside), ``--no-png`` draws none, and the store folder is never written."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from store_samples import SMALL, make_sample

from pointillist_data.store.write import StoreConfig, TokenStoreWriter

CLI = [sys.executable, "-c", "from pipelines.cli import main; main()"]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "data" / "ds.zarr"
    TokenStoreWriter.create(path, StoreConfig(**SMALL)).append([make_sample(i, n) for i, n in enumerate([300, 900])])
    return path


def _inspect(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "40"}  # a narrow terminal must not wrap the JSON
    return subprocess.run([*CLI, "inspect", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_inspect_json_is_valid_json_and_the_store_is_not_written(store, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    before = _tree(store)
    # the check, literally: stdout piped into `python -m json.tool`
    cmd = f"{shlex.join([*CLI, 'inspect', str(store), '--json'])} | {shlex.join([sys.executable, '-m', 'json.tool'])}"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=work, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "COLUMNS": "40"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["samples"] == 2 and [row["subject_id"] for row in doc["table"]] == ["000", "001"]
    # the default picture goes to the current folder, named after the store
    assert doc["picture"] == "ds_inspect.png" and Image.open(work / "ds_inspect.png").size[0] > 400
    assert _tree(store) == before, "inspect wrote into the store folder"

    out = tmp_path / "pics" / "p.png"
    r = _inspect(work, str(store), "--json", "--png", str(out), "--sample", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["picture"] == str(out) and out.exists()

    (work / "ds_inspect.png").unlink()
    r = _inspect(work, str(store), "--json", "--no-png")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["picture"] is None and not list(work.iterdir())
    r = _inspect(work, str(store), "--no-png")
    assert r.returncode == 0 and "picture" not in r.stdout and not list(work.iterdir()), r.stdout
    assert _tree(store) == before
