"""The `pointillist flame` commands."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app


def test_flame_info_and_preview(tmp_path, demo_asset):
    r = CliRunner().invoke(app, ["flame", "info"])
    assert r.exit_code == 0, r.output
    assert str(demo_asset.num_faces) in r.output and "no substitute for FLAME" in r.output
    out = tmp_path / "head.png"
    r = CliRunner().invoke(app, ["flame", "preview", "--out", str(out), "--size", "96"])
    assert r.exit_code == 0, r.output
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 96 and img.std() > 10  # something was drawn


def test_flame_info_bad_file(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    r = CliRunner().invoke(app, ["flame", "info", str(bad)])
    assert r.exit_code != 0
    assert "x.npz [f]" in str(r.exception)
