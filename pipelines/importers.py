"""``pointillist import``: another tool's outputs as a run's stage outputs, with records.

A VHAP tracking replaces the ``landmarks`` and ``track`` stages of a participant; a
GaussianAvatars avatar replaces ``landmarks``, ``track`` and ``fit``. Each replaced stage
gets an output folder ``work/<pid>/<stage>/<key>/`` and a stage record (status
``complete``, ``imported`` saying from what) through :class:`pipelines.workspace.Workspace`,
exactly where the runner keeps its own. The runner (:mod:`pipelines.runner`) skips a stage
whose record is an import (:func:`imported_key`) instead of matching an input hash -
there are no inputs to hash - and keys the next stage by the imported outputs' checksums,
so ``pointillist run`` continues with the stages after them (canonicalize -> tokenize ->
shard) and redoes them when an import changes. ``--force landmarks`` recomputes everything
from the capture instead (an imported ``landmarks`` folder is empty: the imported tracking
used its own landmarks).
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
from pathlib import Path

from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.params import FlameParams, tracked_params_name
from pointillist_data.interop import InteropError, import_gaussian_avatars, import_vhap
from pointillist_data.manifests import config_hash, file_sha256

from .stages import STAGE_OUTPUTS
from .workspace import Workspace

__all__ = ["SOURCES", "REPLACES", "import_participant", "imported_key"]

SOURCES = ("vhap", "ga")
REPLACES = {"vhap": ("landmarks", "track"), "ga": ("landmarks", "track", "fit")}
_PATH_OPTIONS = ("tracking",)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _checksums(folder: Path, patterns: list[str]) -> dict[str, str]:
    out = {}
    for pat in patterns:
        for p in sorted(glob.glob(str(folder / pat))):
            out[os.path.relpath(p, folder)] = file_sha256(p)
    return out


def imported_key(ws: Workspace, pid: int, stage: str, record: dict | None) -> str | None:
    """The output key of a complete imported stage whose folder exists, else ``None``."""
    if not record or record.get("status") != "complete" or not record.get("imported"):
        return None
    key = record.get("key")
    return key if key and ws.exists(pid, stage, key) else None


def _fill(kind: str, stage: str, src: Path, tmp: Path, asset: FlameAsset, options: dict) -> dict:
    """Write one replaced stage's outputs into ``tmp``; returns its metrics."""
    if stage == "landmarks":  # the imported tracking used its own landmarks; nothing to hand on
        return {"cameras": 0, "imported": True}
    if kind == "vhap":
        return import_vhap(src, tmp, asset, options.get("tracking"), options.get("epoch"))
    if stage == "fit":
        return import_gaussian_avatars(src, tmp, asset, options.get("iteration"), options.get("ply_sh_degree"))
    # GaussianAvatars has no tracking export: hand on its FLAME parameters in VHAP's layout
    from pointillist_data.interop import find_gaussian_avatars_ply

    ply = find_gaussian_avatars_ply(src, options.get("iteration"))
    params = FlameParams.load(ply.parent / "flame_param.npz")
    params.n_processed_frames = params.num_frames
    params.save(tmp / tracked_params_name(0))
    # the track stage's metric types (``timesteps``: frame ids, which GaussianAvatars' file lacks)
    return {"timesteps": [], "frames_tracked": params.num_frames, "frames_total": params.num_frames}


def import_participant(kind: str, src: str | Path, out: str, pid: int, asset: FlameAsset, **options) -> dict:
    """Import ``src`` as participant ``pid``'s stage outputs under the run folder ``out``.

    Args:
        kind: ``"vhap"`` (export folder; options ``tracking``, ``epoch``) or ``"ga"``
            (GaussianAvatars output folder; options ``iteration``, ``ply_sh_degree``).
        src: the folder to import.
        out: the run's output folder or fsspec URL (as for ``pointillist run --out``).
        pid: participant id.
        asset: the head model of the run.

    Returns:
        ``{stage: record}`` of the stages written.

    Raises:
        InteropError: an unknown ``kind``, a missing ``src`` or a failed check (see
            :func:`pointillist_data.interop.import_vhap` / ``import_gaussian_avatars``).
            Nothing is recorded for a participant whose import fails.
    """
    if kind not in REPLACES:
        raise InteropError(f"--from: unknown source '{kind}' (one of {', '.join(SOURCES)})")
    src = Path(src)
    if not src.is_dir():
        raise InteropError(f"{src}: folder not found")
    # paths absolute before they are recorded and hashed into the key: the same files give the
    # same key from any working folder, and the record names them wherever it is read
    options = {k: str(Path(v).resolve()) if k in _PATH_OPTIONS and v is not None else v for k, v in options.items()}
    ws = Workspace(out)
    staged = []
    try:
        for stage in REPLACES[kind]:  # convert everything first: a failed check records nothing
            tmp = ws.new_tmp(pid, stage, "import")
            staged.append((stage, tmp, None, _now()))
            staged[-1] = (stage, tmp, _fill(kind, stage, src, tmp, asset, options), staged[-1][3])
    except BaseException:
        for _, tmp, _, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    records = {}
    for stage, tmp, metrics, started in staged:
        outputs = _checksums(tmp, STAGE_OUTPUTS[stage])
        conf = {"from": kind, "source": str(src.resolve()), **{k: str(v) for k, v in options.items() if v is not None}}
        key = "import-" + config_hash({"config": conf, "outputs": outputs, "stage": stage})
        ws.publish(tmp, pid, stage, key)
        rec = {"stage": stage, "participant": f"{pid:03d}", "status": "complete", "imported": conf, "key": key,
               "inputs": {"source": str(src.resolve())}, "input_hash": key, "config": conf,
               "config_hash": config_hash(conf), "outputs": outputs, "metrics": metrics, "flagged": [],
               "error": None, "traceback": None, "started": started, "finished": _now(),
               "output_dir": ws.stage_dir(pid, stage, key)}
        ws.write_record(pid, stage, rec)
        records[stage] = rec
    return records
