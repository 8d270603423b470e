"""Tables readable at 80 columns when piped (pipelines/tables.py): ``status``, ``inspect`` and
``run``'s summary never cut a cell with an ellipsis and keep every line within 80 characters;
``status`` gives each failure's reason whole, file name included."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from store_samples import SMALL, make_sample
from typer.testing import CliRunner

from pipelines.app import console
from pipelines.cli import app
from pipelines.tables import ELLIPSIS

LONG = "/data/pointillist/runs/2026-12-07/landmarks/EXP-1-head/cam_222200037.npz"


def _readable(text: str) -> None:
    assert ELLIPSIS not in text and "..." not in text.replace("...)", "")
    # a line may pass 80 columns only by a path kept whole (a folded path cannot be copied)
    too_long = [ln for ln in text.splitlines() if len(ln) > 80
                and not any("/" in w and len(ln) - len(w) <= 60 for w in ln.split())]
    assert too_long == []


@pytest.fixture
def narrow(monkeypatch):
    """The CLI's console as a pipe with COLUMNS=80 sees it (not a terminal, 80 columns)."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(console, "_width", 80)


def _record(path, **rec):
    path.mkdir(parents=True)
    (path / "record.json").write_text(json.dumps(rec))


def test_status_is_readable_at_80_columns_and_names_the_file(tmp_path, narrow):
    run = tmp_path / "run"
    t0, t1 = "2026-12-07T10:00:00+00:00", "2026-12-07T10:02:05+00:00"
    for pid in ("017", "018", "019"):
        _record(run / "work" / pid / "landmarks", status="complete", started=t0, finished=t1)
    _record(run / "work" / "017" / "track", status="failed", started=t0, finished=t1,
            error=f"LandmarkError: landmark file unreadable (truncated npz): {LONG}")
    _record(run / "work" / "018" / "track", status="interrupted", started=t0, error="stopped by Ctrl-C")
    _record(run / "work" / "019" / "track", status="complete", started=t0, finished=t1)
    r = CliRunner().invoke(app, ["status", str(run)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    _readable(r.output)
    flat = " ".join(r.output.split())
    assert f"017 track: failed: LandmarkError: landmark file unreadable (truncated npz): {LONG}" in flat
    assert "018 track: interrupted: stopped by Ctrl-C" in flat
    for word in ("landmarks", "canonicalize", "supervise", "019"):
        assert word in r.output


def test_inspect_table_is_readable_at_80_columns(tmp_path, narrow):
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter

    path = tmp_path / "ds.zarr"
    TokenStoreWriter.create(path, StoreConfig(**SMALL)).append([make_sample(i, n) for i, n in enumerate([300, 900])])
    r = CliRunner().invoke(app, ["inspect", str(path), "--no-png"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    _readable(r.output)
    for column in ("subject id", "landmark iod pct", "max per face", "empty faces"):
        assert column in " ".join(r.output.split())


def test_run_summary_is_readable_at_80_columns():
    from pipelines.cli_pipeline import _summary_table
    from pipelines.tables import print_table

    stages = {s: "complete" for s in ("landmarks", "track", "fit", "canonicalize", "tokenize", "supervise")}
    summary = {"summaries": [{"participant": "017", "status": "complete", "stages": stages},
                             {"participant": "018", "status": "failed", "stages": {**stages, "fit": "failed"},
                              "error": f"FittingError: no foreground in the masks of {LONG}"}]}
    out = io.StringIO()
    print_table(Console(file=out, width=80, force_terminal=False), _summary_table(summary))
    _readable(out.getvalue())
    assert LONG in out.getvalue() and "canonicalize: complete" in " ".join(out.getvalue().split())


def test_a_table_that_fits_stays_a_table():
    from rich.table import Table

    from pipelines.tables import print_table

    t = Table(title="t")
    t.add_column("property")
    t.add_column("value")
    t.add_row("faces", "10144")
    out = io.StringIO()
    print_table(Console(file=out, width=80, force_terminal=False), t)
    assert "┃ property" in out.getvalue() and "10144" in out.getvalue()
