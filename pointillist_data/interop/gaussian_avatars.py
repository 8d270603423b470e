"""A GaussianAvatars avatar -> the ``fit`` stage's outputs.

Input (GaussianAvatars ``scene/gaussian_model.py`` / ``scene/flame_gaussian_model.py``
``save_ply``): a model folder with ``point_cloud/iteration_<N>/point_cloud.ply`` (the largest
``N`` unless one is asked for, as GaussianAvatars' ``searchForMaxIteration`` does) or a
folder holding ``point_cloud.ply`` itself, with ``flame_param.npz`` beside the PLY. The PLY
may have any SH degree 0..3; its quaternions need not be normalised.

Output folder (what :func:`pointillist_data.fitting.stage.run_fitting` writes)::

    point_cloud.ply        re-written by :func:`pointillist_data.gaussians.write_ply`
                           (bindings checked, quaternions normalised, SH degree kept)
    flame_param.npz        GaussianAvatars' layout (offsets zero-padded to the head model)
    fitting_record.json    what was imported, from where, Gaussian and per-face counts
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text
from ..flame.asset import FlameAsset
from ..flame.params import FlameParams, FlameParamsError
from ..gaussians import GaussianPlyError, read_ply, write_ply
from .common import InteropError, check_ranges, fit_to_head_model

__all__ = ["import_gaussian_avatars", "find_gaussian_avatars_ply"]

_ITER = re.compile(r"^iteration_(\d+)$")


def find_gaussian_avatars_ply(folder: str | Path, iteration: int | None = None) -> Path:
    """The ``point_cloud.ply`` of a GaussianAvatars output folder.

    Raises:
        InteropError: no PLY, or no PLY of ``iteration``.
    """
    folder = Path(folder)
    if iteration is None and (folder / "point_cloud.ply").exists():
        return folder / "point_cloud.ply"
    its = {int(m.group(1)): p for p in (folder / "point_cloud").glob("iteration_*")
           if (m := _ITER.match(p.name)) and (p / "point_cloud.ply").exists()}
    if not its:
        raise InteropError(f"{folder}: no point_cloud.ply nor point_cloud/iteration_<N>/point_cloud.ply")
    if iteration is None:
        iteration = max(its)
    if iteration not in its:
        raise InteropError(f"{folder}: no point cloud of iteration {iteration} (found {sorted(its)})")
    return its[iteration] / "point_cloud.ply"


def import_gaussian_avatars(src: str | Path, out: str | Path, asset: FlameAsset, iteration: int | None = None,
                            ply_sh_degree: int | None = None) -> dict:
    """Turn a GaussianAvatars avatar into fit-stage outputs in ``out``.

    Args:
        src: GaussianAvatars output folder (see the module docstring).
        out: the (empty) stage folder to fill.
        asset: the head model (face count of the bindings, vertex count of the offsets).
        iteration: which ``iteration_<N>`` (default: the largest).
        ply_sh_degree: SH degree of the written PLY, at least the imported one's (zero-padded;
            default: the imported one's).

    Returns:
        Metrics: ``gaussians``, ``sh_degree``, ``timesteps`` (a count, as the fit stage's),
        ``empty_faces``, ``max_per_face``, ``per_face_histogram`` (faces holding 0, 1, ...
        Gaussians), ``offsets_padded``.

    Raises:
        InteropError: missing files, bindings outside the head model's faces, non-finite
            values, FLAME parameters that fail validation or are out of range, a
            ``ply_sh_degree`` below the file's or above 3 (the file named).
    """
    out = Path(out)
    ply = find_gaussian_avatars_ply(src, iteration)
    flame = ply.parent / "flame_param.npz"
    try:
        g = read_ply(ply, asset.num_faces)
        params = FlameParams.load(flame)
    except (GaussianPlyError, FlameParamsError, FileNotFoundError) as e:
        raise InteropError(str(e)) from e
    params, padded = fit_to_head_model(params, asset.num_vertices, str(flame))
    check_ranges(params, str(flame))
    if ply_sh_degree is not None and not g.sh_degree <= ply_sh_degree <= 3:
        # a lower degree would silently drop the file's view-dependent colour
        raise InteropError(f"{ply}: has SH degree {g.sh_degree}; --ply-sh-degree {ply_sh_degree} must be "
                           f"{g.sh_degree}..3 (leave it out to keep the file's)")
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_ply(g, out / "point_cloud.ply", asset.num_faces, ply_sh_degree)
    except GaussianPlyError as e:
        raise InteropError(f"{ply}: {e}") from e
    params.save_gaussian_avatars(out / "flame_param.npz", asset.num_vertices)
    counts = np.bincount(g.binding, minlength=asset.num_faces)
    # the fit stage's metric names and types (pipelines.stages.run_fit: ``timesteps`` a count),
    # which the store's provenance reads (pointillist_data.provenance)
    metrics = {"gaussians": len(g), "sh_degree": g.sh_degree, "timesteps": params.num_frames,
               "empty_faces": int((counts == 0).sum()), "max_per_face": int(counts.max(initial=0)),
               "per_face_histogram": np.bincount(counts).tolist(), "offsets_padded": padded}
    record = {"imported": {"from": "gaussian_avatars", "ply": str(ply.resolve()), "flame_param": str(flame.resolve())},
              "metrics": metrics}
    atomic_write_text(out / "fitting_record.json", json.dumps(record, indent=1))
    return metrics
