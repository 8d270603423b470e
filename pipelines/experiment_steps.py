"""The steps of :mod:`pipelines.experiment`, each calling the library function its command
calls: ``demo-capture`` (:func:`make_synthetic_capture`), ``split`` (:func:`make_split`),
``run`` (:func:`run_pipeline`), ``train-ar`` (:class:`~pointillist_model.train.Trainer`, here
with the NLL probe), ``train-decoder`` (:class:`~pointillist_model.decoder_train.DecoderTrainer`),
``generate-points`` (:func:`generate_from_portrait`), ``evaluate --ablation``
(:func:`run_ablation`), then the claims (:mod:`pointillist_model.claims_report`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from pointillist_data.errors import InputError
from pointillist_data.fileio import atomic_write_text

from .experiment_config import ExperimentConfig

SEQUENCE = "EXP-1-head"


class SplitLeakError(InputError):
    """A trainer's selection holds a test identity of the split manifest."""


def check_no_leak(trained: list[str], split: dict, who: str) -> None:
    """Refuse a training selection ``trained`` (subject ids) holding any ``test`` identity of
    the ``split`` manifest.

    Raises:
        SplitLeakError: naming ``who`` and the leaked identities.
    """
    leak = sorted(set(map(str, trained)) & set(map(str, split["test"])))
    if leak:
        raise SplitLeakError(who, f"would train on test identities {', '.join(leak)} of the split manifest "
                             "(the store's split column disagrees with split.json)",
                             "rebuild the run with this split (delete the experiment's run/ and steps/run.json)")


def _fresh_folder(folder: Path, key: str) -> bool:
    """Keep ``folder`` (and its checkpoint) when it was written for step ``key``, else empty it;
    returns whether a checkpoint to resume from is there."""
    stamp = folder / "step_key.txt"
    if folder.exists() and (not stamp.is_file() or stamp.read_text().strip() != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, key + "\n")
    return (folder / "checkpoint.pt").is_file()


@dataclass
class Context:
    """What every step reads: the config, the experiment folder, the FLAME asset, the console
    and the dataset run's worker count."""

    cfg: ExperimentConfig
    out: Path
    asset: Any
    console: Console
    workers: int

    @property
    def capture(self) -> Path:
        return Path(self.cfg.capture).resolve() if self.cfg.capture else self.out / "capture"

    @property
    def split_path(self) -> Path:
        return self.out / "split.json"

    @property
    def store(self) -> str:
        return str(self.out / "run" / "store.zarr")

    @property
    def supervision(self) -> str:
        return str(self.out / "run" / "supervision.zarr")

    def split_doc(self) -> dict:
        from .runner import read_split

        return read_split(str(self.split_path))

    def capture_summary(self) -> dict:
        return json.loads((self.capture / "capture.json").read_text())


def capture(ctx: Context) -> dict:
    """``demo-capture --identities N`` into ``<out>/capture`` (or check the given capture)."""
    from pointillist_data.capture.synthetic import make_synthetic_capture

    from .command_configs import DemoCaptureJob

    cfg = ctx.cfg
    if cfg.capture:
        try:
            s = ctx.capture_summary()
        except (OSError, ValueError):
            raise InputError(f"--capture {cfg.capture}", "not a synthetic capture (no readable capture.json)") from None
        if len(s["participants"]) != cfg.identities:
            raise InputError(f"--capture {cfg.capture}", f"holds {len(s['participants'])} identities, "
                             f"--identities is {cfg.identities}")
    else:
        job = DemoCaptureJob(out=str(ctx.capture), identities=cfg.identities, timesteps=cfg.timesteps, seed=cfg.seed,
                             sequence=SEQUENCE, flame=cfg.flame)
        s = make_synthetic_capture(ctx.capture, job.capture_config(), ctx.asset,
                                   progress=lambda pid: ctx.console.print(f"      participant {pid:03d} written"))
    counts = [p["gaussians"] for p in s["participants"].values()]
    return {"participants": len(counts), "gt_gaussians_min": int(min(counts)), "gt_gaussians_max": int(max(counts))}


def split(ctx: Context) -> dict:
    """``split``: the recorded train / test split of the capture's participants."""
    from pointillist_data.manifests import make_split

    ids = sorted(ctx.capture_summary()["participants"])
    doc = make_split(ids, ctx.cfg.n_test, ctx.cfg.seed, dataset="synthetic", source=str(ctx.capture))
    atomic_write_text(ctx.split_path, json.dumps(doc, indent=1) + "\n")
    return {"train": len(doc["train"]), "test": ", ".join(doc["test"])}


def dataset_run(ctx: Context) -> dict:
    """``run`` on the local dask cluster at the recipe's budgets, the split recorded in the store."""
    from .monitor import RunMonitor
    from .runner import run_pipeline
    from .stages import PipelineConfig

    ids = sorted(int(p) for p in ctx.capture_summary()["participants"])
    pc = PipelineConfig(capture=str(ctx.capture), out=str(ctx.out / "run"), participants=ids, sequences=[SEQUENCE],
                        flame=ctx.cfg.flame, landmarks="files:{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT",
                        tracking=dict(ctx.cfg.tracking), fitting=dict(ctx.cfg.fitting), split=str(ctx.split_path),
                        device=ctx.cfg.device.split(":")[0])
    with RunMonitor(pc.out, [f"{p:03d}" for p in ids], ctx.console) as monitor:
        summary = run_pipeline(pc, workers=ctx.workers, monitor=monitor)
    if summary["failed"]:
        raise InputError(f"{ctx.out / 'run'}", f"participants failed in the dataset run: {summary['failed']}",
                         f"see pointillist status {ctx.out / 'run'}; re-run the experiment to retry them")
    return {"wall_s": summary["wall_s"], "participants": len(ids), "workers": ctx.workers}


def _assert_store_split(ctx: Context, who: str, trained: list[str]) -> None:
    check_no_leak(trained, ctx.split_doc(), who)


def train_ar(ctx: Context, key: str) -> dict:
    """``train-ar`` (tiny preset, train split) with the NLL probe; resumes from its checkpoint."""
    from pointillist_data.progress import cli_progress
    from pointillist_model.claims import ProbedTrainer

    cfg = ctx.cfg
    folder = ctx.out / "ar"
    resume = _fresh_folder(folder, key)
    tc = cfg.ar_config(ctx.store, str(folder), ctx.supervision)
    tr = ProbedTrainer(tc, ctx.asset, cfg.nll_windows, cfg.nll_every)
    _assert_store_split(ctx, "train-ar", tr.dataset.subject_ids)
    if resume:
        tr.load(folder / "checkpoint.pt")
        ctx.console.print(f"      resuming from step {tr.step}")
    with cli_progress(ctx.console) as progress:
        log = tr.train(progress=progress)
    last = log[-1] if log else {}
    return {"step": tr.step, "loss": round(float(last.get("loss", float("nan"))), 4),
            "tokens_per_s": round(float(last.get("tokens_per_s", 0.0)), 1)}


def train_decoder(ctx: Context, variant: str, key: str) -> dict:
    """``train-decoder`` of one ablation variant (``flame``: ``--points flame --inputs position``)."""
    from pointillist_data.progress import cli_progress
    from pointillist_data.store.supervision import SupervisionStore
    from pointillist_model.decoder_train import DecoderTrainer

    cfg = ctx.cfg
    folder = ctx.out / f"decoder_{variant}"
    resume = _fresh_folder(folder, key)
    held = SupervisionStore.open(ctx.supervision).cameras(0)[8].serial  # VHAP's held-out camera
    dc = cfg.decoder_config(ctx.store, ctx.supervision, str(ctx.out / "ar" / "checkpoint.pt"), str(folder), variant,
                            held, str(ctx.out / "ar_features"))
    with cli_progress(ctx.console) as progress:
        tr = DecoderTrainer(dc, ctx.asset, progress)
        _assert_store_split(ctx, f"train-decoder ({variant})", tr.seen_subjects)
        if resume:
            tr.load(folder / "checkpoint.pt")
        log = tr.train(progress=progress)
        ev = tr.evaluate()
    last = log[-1] if log else {}
    return {"step": tr.step, "loss": round(float(last.get("loss", float("nan"))), 4),
            "heldout_psnr_db": round(float(ev["psnr"]), 2)}


def _test_samples(ctx: Context) -> list[tuple[int, str]]:
    from pointillist_data.store.token_store import TokenStore

    test = set(ctx.split_doc()["test"])
    return [(i, s) for i, s in enumerate(TokenStore.open(ctx.store).subject_ids()) if s in test]


def generate(ctx: Context) -> dict:
    """``generate-points`` for each test identity and its tracked shape, from its stored
    portrait (``claims/generated/<subject>``) and from a source frame never used in training
    (``claims/generated_source_frame/<subject>``, the frame in its ``source_frame.json``:
    :func:`~pointillist_model.source_eval.heldout_source_images`)."""
    from pointillist_data.store.supervision import SupervisionStore
    from pointillist_data.store.token_store import TokenStore
    from pointillist_model.config import GenerateConfig
    from pointillist_model.portrait import generate_from_portrait
    from pointillist_model.source_eval import heldout_source_images
    from pointillist_model.trainer_base import load_checkpoint

    st = TokenStore.open(ctx.store)
    ckpt = ctx.out / "ar" / "checkpoint.pt"
    test = _test_samples(ctx)
    frames = heldout_source_images(load_checkpoint(ckpt), st, SupervisionStore.open(ctx.supervision),
                                   [sid for _, sid in test])
    figs: dict[str, dict[str, int]] = {"points": {}, "points_source_frame": {}}
    for n, (i, sid) in enumerate(test):
        gc = GenerateConfig(max_points=ctx.cfg.max_points, seed=ctx.cfg.seed + n, device=ctx.cfg.device,
                            degenerate_min_points=0)
        for key, folder, image in (("points", "generated", np.asarray(st.group["image"][i])),
                                   ("points_source_frame", "generated_source_frame", frames[sid]["image"])):
            res = generate_from_portrait(ckpt, image, ctx.asset, ctx.out / "claims" / folder / sid, gc,
                                         shape=np.asarray(st.group["flame_shape"][i]))
            figs[key][sid] = res[0]["points"]
        atomic_write_text(ctx.out / "claims" / "generated_source_frame" / sid / "source_frame.json",
                          json.dumps({"view": frames[sid]["view"], "how": frames[sid]["how"]}) + "\n")
    return figs


def reenact(ctx: Context) -> dict:
    """``evaluate --ablation`` of the decoder variants on the test identities (stored clouds,
    so the decoders are compared apart from AR sampling; the generated clouds are the
    ``generate`` step's). Cross-reenactment is scored against the synthetic capture's ground
    truth as well: the target's true Gaussians under the driver's true motion
    (:class:`~pointillist_data.capture.synthetic_truth.SyntheticTruth`)."""
    from pointillist_data.capture.synthetic_truth import SyntheticTruth
    from pointillist_data.progress import cli_progress
    from pointillist_model.config import EvalConfig
    from pointillist_model.evaluate import run_ablation

    cfg = ctx.cfg
    decoders = [str(ctx.out / f"decoder_{v}" / "checkpoint.pt") for v in cfg.decoder_variants]
    metrics = ["psnr", "ssim"] + (["lpips"] if cfg.lpips_weights else [])
    ec = EvalConfig(store=ctx.store, supervision=ctx.supervision, decoder=decoders[0], out=str(ctx.out / "claims" / "ablation"),
                    split=str(ctx.split_path), points="stored", max_timesteps=cfg.eval_timesteps,
                    render_scale=cfg.eval_render_scale, metrics=metrics, lpips_weights=cfg.lpips_weights,
                    seed=cfg.seed, device=cfg.device, feature_cache=str(ctx.out / "ar_features"), strip_frames=2)
    with cli_progress(ctx.console) as progress:
        truth, seen = SyntheticTruth(ctx.capture, ctx.asset), {}

        def cross_truth(target, driver, tid, w2c, K, w, h, bg):
            # every variant is driven by the same frames: each reference is rendered once
            key = (target, driver, tid, w2c.tobytes(), K.tobytes(), w, h, bg)
            if key not in seen:
                seen[key] = truth.render(target, driver, tid, w2c, K, w, h, bg)[0]
            return seen[key]

        rows, files = run_ablation(ec, decoders, ctx.asset, progress, cross_truth=cross_truth)
    return {"report": files["report"]}


def claims(ctx: Context) -> dict:
    """The claims table: NLL, generated clouds (from the portrait and from a source frame never
    used in training), reenactment and data quality rows."""
    from pointillist_model.claims_report import write_claims

    quality = data_quality(ctx.out / "run", ctx.capture, ctx.asset, ctx.split_doc())
    doc = write_claims(ctx.store, ctx.out / "ar", ctx.out / "claims", ctx.capture, ctx.split_doc(), ctx.asset,
                       quality, ctx.cfg.nll_windows, ctx.cfg.to_dict(), supervision=ctx.supervision)
    return {r["id"]: r["verdict"] for r in doc["rows"]}


def data_quality(run: Path, capture: Path, asset, split: dict) -> dict:
    """Per identity: the tracking's mean vertex error (mm) against the capture's ground-truth
    FLAME (:func:`~pointillist_data.tracking.stage.vertex_errors`, every vertex and timestep),
    the fitted Gaussian count and the ground truth's count (``capture.json``)."""
    from pointillist_data.flame import FlameParams
    from pointillist_data.flame.params import find_tracked_params
    from pointillist_data.tracking.stage import vertex_errors

    summary = json.loads((capture / "capture.json").read_text())
    seq = summary["config"].get("sequence", SEQUENCE)
    out: dict[str, dict[str, Any]] = {"tracking_mean_mm": {}, "fitted_gaussians": {}, "gt_gaussians": {}}
    for sid in sorted(set(split["train"]) | set(split["test"])):
        work = run / "work" / sid
        track = json.loads((work / "track" / "record.json").read_text())
        fit = json.loads((work / "fit" / "record.json").read_text())
        tracked = FlameParams.load(find_tracked_params(track["output_dir"]))
        gt = FlameParams.load(capture / sid / "ground_truth" / seq / "flame_params.npz")
        out["tracking_mean_mm"][sid] = round(float(vertex_errors(asset, tracked, gt).mean() * 1e3), 3)
        out["fitted_gaussians"][sid] = int(fit["metrics"]["gaussians"])
        out["gt_gaussians"][sid] = int(summary["participants"][sid]["gaussians"])
    return out
