"""Provenance and quality of one store sample, taken from the pipeline's stage records.

A sample's entry in a token store's ``manifest.json`` (``samples[i]``) holds, besides
``subject_id``, ``points`` and ``tokens``, its ``split`` and a ``provenance`` object::

    subject_id, sequences, timesteps        what was captured and used
    capture        "synthetic" (pointillist's demo capture), "nersemble" or "monocular" (a video of
                   ``pointillist run --videos``, held-out frames instead of cameras); null when the
                   tracking record predates this field (the dataset card then assumes NeRSemble)
    flame          {"kind": "bundled", "name", "version", "basis", "basis_sha256"}
                   or {"kind": "file", "file", "sha256"}: the FLAME model's identity
    code           {"package", "version", "git_commit", "git_dirty"}: the code that made it
    stages         {stage: {"config_hash", "input_hash", "finished"[, "imported"]}} of every
                   stage record; ``imported`` (what ``pointillist import`` read) for imported stages
    tracking       landmark error (px, % of the inter-ocular distance), frames, vertex error
                   against ground truth (synthetic captures only; ``null`` otherwise)
    fitting        held-out PSNR (dB) / SSIM, Gaussians, empty faces, per-face count histogram
    created        ISO time the sample was appended (UTC)
    quality        the flat figures :data:`QUALITY_FIELDS` describes (for filters and the card)

The figures are copied from the records the stages wrote (``work/<pid>/<stage>/record.json``,
see :mod:`pipelines.runner`), never recomputed. A sample tokenized outside a run has no
records: its tracking and fitting figures are ``null``.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["QUALITY_FIELDS", "QUALITY_TEXT_FIELDS", "STAGE_NAMES", "sample_provenance", "flame_identity", "code_version",
           "records_beside", "quality_of", "assign_split"]

STAGE_NAMES = ("landmarks", "track", "fit", "canonicalize", "tokenize", "supervise")

# name -> (unit, description); the keys of ``provenance["quality"]``
QUALITY_FIELDS: dict[str, tuple[str, str]] = {
    "psnr": ("dB", "held-out PSNR of the fitted avatar (validation cameras)"),
    "ssim": ("", "held-out SSIM of the fitted avatar"),
    "landmark_px": ("px", "mean 2D landmark error of the tracking"),
    "landmark_iod_pct": ("%", "landmark error as a percentage of the inter-ocular distance"),
    "vertex_mm": ("mm", "mean FLAME vertex error of the tracking against ground truth (synthetic captures)"),
    "gaussians": ("", "Gaussians of the fitted avatar"),
    "empty_faces": ("", "FLAME faces left without a Gaussian"),
    "points": ("", "points in the stored cloud"),
    "tokens": ("", "tokens of the stored sequence"),
    "frames": ("", "timesteps tracked"),
    "vertex_face_mm": ("mm", "mean FLAME vertex error of the face region against ground truth (synthetic captures)"),
    "scale": ("", "capture resolution read, as a fraction of the calibrated full resolution (null: the source's "
                  "default)"),
    "cameras": ("", "cameras the landmarks were found in"),
}
# text figures of ``provenance["quality"]`` (compared with == / != only)
QUALITY_TEXT_FIELDS: dict[str, tuple[str, str]] = {
    "landmark_source": ("", "where the 2D landmarks came from: mediapipe (detected) or files (given, e.g. ground "
                            "truth)"),
}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def flame_identity(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Identity of the FLAME model :func:`pointillist_data.flame.resolve_flame_asset` would use
    for ``path``: a file's sha256, or the bundled demo head's name and builder version."""
    from .flame.demo_head import BASIS_NAME, BASIS_SHA256, BUILDER_VERSION, DEMO_HEAD_NAME
    from .manifests import file_sha256

    path = path or os.environ.get("POINTILLIST_FLAME_MODEL")
    if path:
        return {"kind": "file", "file": Path(path).name, "sha256": file_sha256(path)}
    return {"kind": "bundled", "name": DEMO_HEAD_NAME, "version": BUILDER_VERSION, "basis": BASIS_NAME,
            "basis_sha256": BASIS_SHA256, "licence": "FLAME 2023 Open, CC-BY-4.0 (demo head: not for research)"}


@functools.lru_cache(maxsize=1)
def _git_state() -> tuple[str | None, bool | None]:
    pkg = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=pkg, capture_output=True, text=True,
                           timeout=5)
        lines = r.stdout.split()
        # only this package's own checkout counts (not a project that happens to hold the venv)
        if r.returncode or len(lines) != 2 or Path(lines[0]).resolve() / pkg.name != pkg:
            return None, None
        d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=pkg, capture_output=True,
                           text=True, timeout=10)
        return lines[1], (bool(d.stdout.strip()) if d.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def code_version() -> dict[str, Any]:
    """``{"package", "version", "git_commit", "git_dirty"}``; the commit (and whether tracked
    files differ from it) is ``None`` unless the package runs from its own git checkout."""
    try:
        version = metadata.version("pointillist")
    except metadata.PackageNotFoundError:
        version = None
    commit, dirty = _git_state()
    return {"package": "pointillist", "version": version, "git_commit": commit, "git_dirty": dirty}


def records_beside(sample_file: str | os.PathLike) -> dict[str, dict]:
    """The stage records of a sample written by ``pointillist run``
    (``<out>/work/<pid>/tokenize/<key>/sample.npz`` -> ``<out>/work/<pid>/<stage>/record.json``);
    ``{}`` for a sample made elsewhere."""
    p = Path(sample_file).resolve()
    if len(p.parents) < 3 or p.parents[1].name != "tokenize":
        return {}
    pid_dir = p.parents[2]
    out = {}
    for stage in STAGE_NAMES:
        f = pid_dir / stage / "record.json"
        if f.is_file():
            try:
                out[stage] = json.loads(f.read_text())
            except ValueError:
                continue
    return out


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _names(v: Any) -> list[str]:
    """A record's list of ids (timesteps, sequences) as strings; ``[]`` for anything else:
    records written by older imports hold a count where the track stage holds a list, and a
    record is read, never trusted to have one type (it comes from files on disk)."""
    if not isinstance(v, (list, tuple)):
        return []
    return [str(x) for x in v if isinstance(x, (str, int)) and not isinstance(x, bool)]


def sample_provenance(subject_id: str, points: int, tokens: int, records: dict[str, dict] | None = None,
                      flame: dict[str, Any] | None = None, created: str | None = None) -> dict[str, Any]:
    """The provenance object of one sample (see the module docstring).

    Args:
        subject_id: the sample's id; points, tokens: its stored sizes.
        records: ``{stage: record}`` as the runner wrote them (complete records only count).
        flame: :func:`flame_identity` of the model used (default: the one resolved now).
        created: ISO time (default: now, UTC).
    """
    recs = {k: v for k, v in (records or {}).items() if v and v.get("status") == "complete"}
    tm = (recs.get("track") or {}).get("metrics") or {}
    fm = (recs.get("fit") or {}).get("metrics") or {}
    lm_conf = (recs.get("landmarks") or {}).get("config") or {}
    lm_metrics = (recs.get("landmarks") or {}).get("metrics") or {}
    sequences = _names(tm.get("sequences")) or ([str(lm_conf["sequence"])] if lm_conf.get("sequence") else [])
    timesteps = _names(tm.get("timesteps"))
    # a count in ``timesteps`` (imports before the fix of issue 26) still says how many frames
    frames = _num(tm.get("frames_tracked"))
    frames = frames if frames is not None else (len(timesteps) or _num(tm.get("timesteps")))
    flagged = tm.get("flagged")
    tracking = None if not tm else {
        "landmark_error_px": _num(tm.get("landmark_error_px_mean")),
        "landmark_error_iod_pct": _num(tm.get("landmark_error_iod_pct")),
        "interocular_px": _num(tm.get("interocular_px_mean")),
        "vertex_error_mm": _num(tm.get("vertex_error_mm_mean")),
        "vertex_error_face_mm": _num(tm.get("vertex_error_face_mm_mean")),
        "frames_tracked": frames, "frames_total": _num(tm.get("frames_total")),
        "flagged": len(flagged) if isinstance(flagged, (list, tuple)) else 0,
    }
    fitting = None if not fm else {
        "psnr_heldout_db": _num(fm.get("psnr_heldout_db")), "ssim_heldout": _num(fm.get("ssim_heldout")),
        "gaussians": _num(fm.get("gaussians")), "empty_faces": _num(fm.get("empty_faces")),
        "per_face_histogram": [h for h in fm.get("per_face_histogram") or [] if _num(h) is not None]
        if isinstance(fm.get("per_face_histogram"), (list, tuple)) else [],
    }
    quality = {"psnr": (fitting or {}).get("psnr_heldout_db"), "ssim": (fitting or {}).get("ssim_heldout"),
               "landmark_px": (tracking or {}).get("landmark_error_px"),
               "landmark_iod_pct": (tracking or {}).get("landmark_error_iod_pct"),
               "vertex_mm": (tracking or {}).get("vertex_error_mm"),
               "gaussians": (fitting or {}).get("gaussians"), "empty_faces": (fitting or {}).get("empty_faces"),
               "points": int(points), "tokens": int(tokens), "frames": (tracking or {}).get("frames_tracked"),
               "vertex_face_mm": (tracking or {}).get("vertex_error_face_mm"),
               "scale": _num((lm_conf.get("selection") or {}).get("scale")), "cameras": _num(lm_metrics.get("cameras")),
               # the detector spec minus its file pattern (a local path): mediapipe or files
               "landmark_source": str(lm_conf["detector"]).split(":", 1)[0] if lm_conf.get("detector") else None}
    return {
        "subject_id": subject_id, "capture": tm.get("capture") if isinstance(tm.get("capture"), str) else None,
        "sequences": sequences, "timesteps": timesteps,
        "flame": flame if flame is not None else flame_identity(), "code": code_version(),
        "stages": {s: {"config_hash": r.get("config_hash"), "input_hash": r.get("input_hash"),
                       "finished": r.get("finished"),
                       **({"imported": r["imported"]} if isinstance(r.get("imported"), dict) else {})}
                   for s, r in recs.items()},
        "tracking": tracking, "fitting": fitting, "created": created or _now(), "quality": quality,
    }


def quality_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The flat figures of a manifest sample entry (``subject_id``, ``split`` and every
    :data:`QUALITY_FIELDS` and :data:`QUALITY_TEXT_FIELDS` key; ``None`` where unknown), for
    filters and tables. Figures added to ``quality`` after a store was written are read from
    the rest of its provenance where it holds them (``tracking.vertex_error_face_mm``)."""
    prov = entry.get("provenance") or {}
    q = dict(prov.get("quality") or {})
    q.setdefault("points", entry.get("points"))
    q.setdefault("tokens", entry.get("tokens"))
    if q.get("vertex_face_mm") is None:
        q["vertex_face_mm"] = _num((prov.get("tracking") or {}).get("vertex_error_face_mm"))
    row = {"subject_id": entry.get("subject_id"), "split": entry.get("split", "train")}
    row.update({k: q.get(k) for k in (*QUALITY_FIELDS, *QUALITY_TEXT_FIELDS)})
    return row


def assign_split(subject_id: str, split: dict[str, Any] | None) -> str:
    """``"train"``/``"test"`` from a split manifest (``manifests.make_split``'s format);
    ``"train"`` when no split is given; ``"unassigned"`` for an id in neither list."""
    if not split:
        return "train"
    ids = {str(s).lstrip("0") or "0" for s in split.get("test", [])}
    train = {str(s).lstrip("0") or "0" for s in split.get("train", [])}
    key = str(subject_id).lstrip("0") or "0"
    return "test" if key in ids else "train" if key in train else "unassigned"
