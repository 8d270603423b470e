"""The ``supervise`` stage and the supervision store's sharding (decoder supervision).

Per participant, after tokenization: ``K`` tracked timesteps x every camera of frames and
masks, the cameras, the tracked FLAME parameters and the conditioning crops
(:func:`pointillist_data.store.supervision_build.build_supervision_sample`) into
``supervision.npz``; after all participants, the successful ones are appended to the
supervision store beside the token store (``PipelineConfig.supervision_store``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["supervise_stage", "run_supervise", "shard_supervision", "supervision_config"]


def supervision_config(cfg) -> dict[str, Any]:
    """The stage configuration (keys its outputs): :class:`SupervisionConfig` with the run's
    crop size (the token store's portrait size) and matting method unless overridden.

    Raises:
        ConfigError: an unknown or bad field in ``cfg.supervision``.
    """
    from pointillist_data.fileio import build_config
    from pointillist_data.store.supervision_build import SupervisionConfig

    run_matting = {"matting": cfg.matting} if getattr(cfg, "matting", None) else {}
    return build_config(SupervisionConfig, {"crop_size": cfg.image_size, **run_matting, **cfg.supervision},
                        "config 'supervision'").to_dict()


def supervise_stage(capture: str | Path, pid: int, tracking_dir: str | Path, out_file: str | Path, config=None,
                    selection=None, progress=None) -> dict:
    """One tracked identity's decoder supervision (the stage function of ``pointillist
    supervise`` and of ``run``'s ``supervise`` stage) written to ``out_file``.

    Args:
        capture: NeRSemble folder; pid: participant id.
        tracking_dir: tracking output folder (``tracked_flame_params_<epoch>.npz``).
        config: :class:`~pointillist_data.store.supervision_config.SupervisionConfig`
            (default: its defaults).
        selection: :class:`~pointillist_data.capture.selection.CaptureSelection` whose
            sequences were tracked together (default: as the tracking stage resolves them).
        progress: reporter (:mod:`pointillist_data.progress`).

    Returns:
        ``{"timesteps", "cameras", "image_size": [W, H], "sequences"}``.

    Raises:
        SupervisionBuildError: the tracking does not match the capture; NersembleError: an
        incomplete capture; FileNotFoundError: no tracked parameters in ``tracking_dir``.
    """
    from pointillist_data.capture.selection import CaptureSelection, resolve_sequences
    from pointillist_data.flame import FlameParams
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.store.supervision_build import SupervisionConfig, build_supervision_sample

    params = FlameParams.load(find_tracked_params(tracking_dir))
    seqs = resolve_sequences(capture, pid, selection or CaptureSelection())
    s = build_supervision_sample(capture, pid, seqs, params, config or SupervisionConfig(), subject_id=f"{pid:03d}",
                                 progress=progress)
    s.save(out_file)
    return {"timesteps": s.num_timesteps, "cameras": s.num_cameras, "image_size": list(s.image_size),
            "sequences": seqs}


def run_supervise(cfg, pid: int, inputs: dict[str, Path], out: Path, asset) -> dict:
    from pointillist_data.store.supervision_build import SupervisionConfig

    r = supervise_stage(cfg.capture, pid, inputs["track"], out / "supervision.npz",
                        SupervisionConfig(**supervision_config(cfg)), cfg.selection())
    return {k: r[k] for k in ("timesteps", "cameras", "image_size")}


def shard_supervision(cfg, summaries: list[dict]) -> dict:
    """Append the successful participants' supervision (in id order) to the supervision store
    (created, or re-created after an interrupted creation, when needed), one identity per
    commit (an identity's views are hundreds of MB at the default resolution)."""
    from pointillist_data.canonical import CANONICAL_PARAMS
    from pointillist_data.flame import resolve_flame_asset
    from pointillist_data.store.supervision import SupervisionSample
    from pointillist_data.store.supervision_write import SupervisionStoreConfig, SupervisionStoreWriter

    paths = [s["supervision"] for s in sorted(summaries, key=lambda s: s["participant"]) if s.get("supervision")]
    if not paths:
        return {"appended": 0, "store": cfg.supervision_store}

    def config() -> SupervisionStoreConfig:  # only called when the store is (re-)created
        s0 = SupervisionSample.load(paths[0])
        return SupervisionStoreConfig(image_size=s0.image_size, crop_size=s0.crops.shape[1:3],
                                      crops_per_identity=len(s0.crops),
                                      num_vertices=resolve_flame_asset(cfg.flame).num_vertices,
                                      canonical=CANONICAL_PARAMS)

    w = SupervisionStoreWriter.open_or_create(cfg.supervision_store, config)
    n = sum(w.append([SupervisionSample.load(p)]) for p in paths if _sid(p) not in w.subjects)
    return {"appended": n, "store": cfg.supervision_store, "samples_in_store": w.num_samples}


def _sid(path: str) -> str:
    import numpy as np

    with np.load(path) as z:
        return str(z["subject_id"])
