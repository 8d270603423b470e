"""Output files honour the umask (issue 27 item 5): a group sharing a results folder (umask
002) gets group-writable files, never the 0600 of a ``mkstemp`` temporary renamed into place.

Each scenario runs in a subprocess, because the umask is per process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent

# Every atomic writer an output passes through: the core's (npz, text, JSON configs, PNG),
# the model's (PLY of `portrait`; its npy, the hidden-state cache and the evaluation report use the core's), a
# token store created and appended to (its objects, manifest, DATASET.md / .png) and the
# shared token map of the window dataset.
SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {tests!r})
    os.umask(int(sys.argv[2], 8))
    out = Path(sys.argv[1])
    os.environ["POINTILLIST_CACHE"] = str(out / "cache")

    from pointillist_data.fileio import atomic_save_npy, atomic_savez, atomic_write_text
    from pointillist_data.store.loader import token_map
    from pointillist_data.store.token_store import TokenStore
    from pointillist_data.store.write import StoreConfig, TokenStoreWriter
    from pointillist_data.tracking.config import TrackingConfig
    from pointillist_data.viz import save_png
    from pointillist_model.portrait import write_points_ply
    from store_samples import SMALL, make_sample

    atomic_savez(out / "a.npz", x=np.arange(3))
    atomic_savez(out / "b.npz", compressed=True, x=np.arange(3))
    atomic_write_text(out / "run_config.json", "{{}}")
    TrackingConfig().save(out / "config.json")
    save_png(np.zeros((4, 4, 3), np.uint8), out / "p.png")
    (out / "model").mkdir()
    write_points_ply(out / "model" / "points.ply", np.zeros((2, 3), np.float32), np.zeros(2, np.int32))
    atomic_save_npy(out / "hidden.npy", np.zeros(3, np.float16))  # the hidden-state cache's and portrait's writer
    atomic_write_text(out / "eval" / "report.md", "# r")  # the evaluation report's writer
    w = TokenStoreWriter.create(out / "ds.zarr", StoreConfig(**SMALL))
    w.append([make_sample(0, 300)])
    TokenStoreWriter.open(out / "ds.zarr").append([make_sample(1, 500)])
    token_map(TokenStore.open(out / "ds.zarr"))
""").format(tests=str(HERE))


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("umask, file_mode, dir_mode", [("002", 0o664, 0o775), ("022", 0o644, 0o755)])
def test_outputs_follow_the_umask_in_a_shared_folder(tmp_path, umask, file_mode, dir_mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)  # a group folder: setgid, group-writable
    script = tmp_path / "write.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(shared), umask], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    modes = _modes(shared)
    files = {k: m for k, m in modes.items() if (shared / k).is_file()}
    dirs = {k: m & 0o777 for k, m in modes.items() if (shared / k).is_dir()}
    # the writers all ran (no test that cannot fail): outputs of each are there
    for name in ("a.npz", "b.npz", "run_config.json", "config.json", "p.png", "model/points.ply", "hidden.npy",
                 "eval/report.md", "ds.zarr/manifest.json", "ds.zarr/DATASET.md", "ds.zarr/tokens/c/0"):
        assert name in files, (name, sorted(files))
    assert any(k.startswith("cache/tokens/") and k.endswith(".u16") for k in files), sorted(files)
    assert not any(".tmp" in k or k.endswith(".partial") for k in files), sorted(files)
    wrong = {k: oct(m) for k, m in files.items() if m != file_mode}
    assert not wrong, f"files not {oct(file_mode)} under umask {umask}: {json.dumps(wrong, indent=1)}"
    wrong = {k: oct(m) for k, m in dirs.items() if m != dir_mode}
    assert not wrong, f"folders not {oct(dir_mode)} under umask {umask}: {json.dumps(wrong, indent=1)}"
