"""Data-quality figures of a dataset run on a synthetic capture, per identity: tracking
against the ground-truth FLAME parameters and fitted Gaussian counts against the ground
truth's.

Both read a run folder (``pointillist run --out RUN``: ``RUN/work/<pid>/track/record.json``
and ``RUN/work/<pid>/fit/record.json``, each naming its stage's output folder) and the
synthetic capture it ran on (``CAPTURE/capture.json`` and
``CAPTURE/<pid>/ground_truth/<sequence>/flame_params.npz``,
:mod:`pointillist_data.capture.synthetic`). Source: this toolkit (issue 30, item 4).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..flame import FlameAsset, FlameParams
from ..flame.params import find_tracked_params

__all__ = ["stage_output", "tracking_vertex_error", "vertex_error_breakdown", "fitted_gaussian_counts", "pearson"]

# groups of parameters swapped for the ground truth's by vertex_error_breakdown
BREAKDOWN_GROUPS = {"head_pose": ("rotation", "translation", "neck_pose"), "jaw_eyes": ("jaw_pose", "eyes_pose"),
                    "shape": ("shape", "static_offset"), "expression": ("expr",)}


def _pid(participant: int | str) -> str:
    return f"{int(participant):03d}" if str(participant).isdigit() else str(participant)


def stage_output(run: str | Path, participant: int | str, stage: str) -> Path:
    """The output folder of ``stage`` (``track``, ``fit``) for a participant of a run folder.

    The record's ``output_dir`` is relative to the run folder (or absolute, in older
    records); a folder that moved since is found under ``RUN/work/<pid>/<stage>/`` by its
    last path component.

    Raises:
        InputError: no record, or its output folder is missing.
    """
    run = Path(run)
    rec_path = run / "work" / _pid(participant) / stage / "record.json"
    try:
        rec = json.loads(rec_path.read_text())
        out = str(rec["output_dir"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(str(rec_path), f"no readable {stage} record with an output_dir ({e})") from None
    for cand in (Path(out) if Path(out).is_absolute() else run / out, rec_path.parent / Path(out).name):
        if cand.is_dir():
            return cand
    raise InputError(str(rec_path), f"its output folder {out} does not exist")


def tracking_vertex_error(run: str | Path, capture: str | Path, participant: int | str, asset: FlameAsset,
                          sequence: str | None = None) -> dict:
    """Mean vertex error (millimetres) of a participant's tracking against the synthetic
    capture's ground truth.

    The tracker works in the capture's world frame (its calibrated cameras), as the ground
    truth does, so both meshes are compared as they are, with no alignment (a global offset
    of the tracking counts as error). Both are posed with ``asset``'s FLAME model (shape,
    expression, poses, translation and the tracking's static offset) on the timesteps the
    tracking kept; the ground truth has no static offset.

    Args:
        run: the run folder; capture: the synthetic capture; participant: e.g. ``901``.
        asset: the head model both were made with (the capture's, e.g. the demo head).
        sequence: the ground truth's sequence (default: the only one under
            ``<pid>/ground_truth/``).

    Returns:
        ``{"participant", "sequence", "frames", "mean_mm", "face_mm", "max_mm"}``: mean over
        frames and all vertices, mean over the face region
        (:func:`pointillist_data.tracking.stage.face_region`) and the largest vertex error.

    Raises:
        InputError: no tracking or ground truth, or timesteps of the tracking missing from
            the ground truth.
    """
    from .stage import face_region, vertex_errors

    pid = _pid(participant)
    gt_dir = Path(capture) / pid / "ground_truth"
    if sequence is None:
        seqs = sorted(p.parent.name for p in gt_dir.glob("*/flame_params.npz"))
        if len(seqs) != 1:
            raise InputError(str(gt_dir), f"expected one sequence's flame_params.npz, found {len(seqs)}; name one")
        sequence = seqs[0]
    gt_path = gt_dir / sequence / "flame_params.npz"
    if not gt_path.is_file():
        raise InputError(str(gt_path), "no ground-truth FLAME parameters")
    tracked = FlameParams.load(find_tracked_params(stage_output(run, pid, "track")))
    gt = FlameParams.load(gt_path)
    if tracked.timestep_id is not None and gt.timestep_id is not None:
        pos = {str(t).split("_")[-1]: i for i, t in enumerate(gt.timestep_id)}
        keys = [str(t).split("_")[-1] for t in tracked.timestep_id]
        missing = [k for k in keys if k not in pos]
        if missing:
            raise InputError(str(gt_path), f"no ground truth for tracked timesteps {', '.join(missing[:5])}")
        gt = FlameParams.concatenate([gt.frame(pos[k]) for k in keys])
    if gt.num_frames != tracked.num_frames:
        raise InputError(str(gt_path), f"{gt.num_frames} frames, the tracking has {tracked.num_frames}")
    err = vertex_errors(asset, tracked, gt) * 1e3
    face = face_region(asset, gt.shape)
    return {"participant": pid, "sequence": sequence, "frames": int(gt.num_frames), "mean_mm": float(err.mean()),
            "face_mm": float(err[:, face].mean()), "max_mm": float(err.max())}


def vertex_error_breakdown(asset: FlameAsset, tracked: FlameParams, gt: FlameParams) -> dict[str, float]:
    """Where a tracking's vertex error comes from: the mean vertex error (mm) with each group
    of :data:`BREAKDOWN_GROUPS` (and every pair of groups) taken from the ground truth and the
    rest from the tracking. A group whose swap removes most of the error holds the cause
    (e.g. ``head_pose``: global rotation and neck pose trade off, landmarks cannot tell them
    apart). ``shape`` swaps the static offset too (the ground truth has none).

    Args:
        tracked, gt: the same frames in the same order (see :func:`tracking_vertex_error`).

    Returns:
        ``{"tracked": mm, "<group>": mm, "<group>+<group>": mm, ...}``.
    """
    from itertools import combinations

    from .stage import vertex_errors

    def err(groups: tuple[str, ...]) -> float:
        swap = {k: getattr(gt, k) for g in groups for k in BREAKDOWN_GROUPS[g]}
        return float(vertex_errors(asset, FlameParams(**{**tracked.__dict__, **swap}), gt).mean() * 1e3)

    out = {"tracked": err(())}
    for n in (1, 2):
        for combo in combinations(BREAKDOWN_GROUPS, n):
            out["+".join(combo)] = err(combo)
    return out


def pearson(x, y) -> float:
    """Pearson correlation of two equally long sequences (``nan`` for fewer than 2 pairs or
    a constant sequence)."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"pearson: need two 1-D sequences of one length, got {a.shape} and {b.shape}")
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def fitted_gaussian_counts(run: str | Path, capture: str | Path, participants: list[int | str] | None = None) -> dict:
    """Fitted vs ground-truth Gaussian counts per participant, and their Pearson correlation.

    The fitted count is the fit's ``point_cloud.ply`` (its record's ``metrics.gaussians``);
    the ground truth's is ``capture.json``'s ``participants.<pid>.gaussians``.

    Args:
        participants: default: every participant of ``capture.json`` with a fit in the run.

    Returns:
        ``{"participants": {pid: {"fitted": int, "ground_truth": int}}, "pearson_r": float}``
        (``nan`` for fewer than two participants or constant counts).

    Raises:
        InputError: unreadable ``capture.json``, or a named participant without a fit.
    """
    cj = Path(capture) / "capture.json"
    try:
        truth = {k: int(v["gaussians"]) for k, v in json.loads(cj.read_text())["participants"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(str(cj), f"not a synthetic capture's summary with Gaussian counts ({e})") from None
    named = participants is not None
    pids = [_pid(p) for p in participants] if named else sorted(truth)
    out: dict[str, dict] = {}
    for pid in pids:
        if pid not in truth:
            raise InputError(str(cj), f"no participant {pid}")
        rec = Path(run) / "work" / pid / "fit" / "record.json"
        if not rec.is_file():
            if named:
                raise InputError(str(rec), "no fit record")
            continue
        try:
            fitted = int(json.loads(rec.read_text())["metrics"]["gaussians"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(str(rec), f"no metrics.gaussians ({e})") from None
        out[pid] = {"fitted": fitted, "ground_truth": truth[pid]}
    r = pearson([v["fitted"] for v in out.values()], [v["ground_truth"] for v in out.values()]) if len(out) >= 2 \
        else math.nan
    return {"participants": out, "pearson_r": r}
