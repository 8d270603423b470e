"""``pointillist experiment`` / ``make experiment``: the held-out identities experiment (issue 30).

synthetic identities (``demo-capture --identities N``) -> the recorded split (``split``) ->
the dataset run (``run``, on the local dask cluster at the recipe's reduced budgets) ->
``train-ar`` (source images drawn from the supervision views, the claim-(a) NLL probe in its
snapshot hook) -> ``train-decoder`` per ablation variant -> point clouds generated for the test
identities from their portrait and from a source frame never used in training
(``generate-points``) -> ``evaluate --ablation`` (cross-reenactment also against the synthetic
ground truth) -> the claims (``claims.json``, ``claims.md``, ``claims.png``).

Each step calls the library function its command calls (one code path per job) and, when it
ends, writes ``steps/<step>.json``: a done-marker holding the hash of its part of the config
and of the markers of the steps it depends on. A re-run skips every step whose marker matches;
a step whose marker is gone (or whose config or an upstream step changed) runs again, and so
does every step after it. Training steps resume from their checkpoint when it was written
for the same step key (``step_key.txt`` beside it), so an interrupted run continues.

The test identities never reach training: every trainer's selection is checked against the
split manifest before it trains (:func:`check_no_leak`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from pointillist_data.fileio import atomic_write_text
from pointillist_data.manifests import config_hash

from . import experiment_steps as S
from .experiment_config import ExperimentConfig
from .experiment_steps import SplitLeakError, check_no_leak  # noqa: F401 - re-exported

__all__ = ["run_experiment", "SplitLeakError", "check_no_leak", "step_names", "capture_part", "estimate_seconds", "COST"]

# Seconds per unit for the plan's estimate on a 2-core CPU machine (BENCHMARKS.md, "Held-out
# identities experiment"). run_per_identity and ar_step are measured on an idle machine (issue 30:
# 3 identities at the demo budgets with 2 workers in 380 s; 2,000 tiny-preset steps of 4 x 1024
# tokens in 24 min); the others are scaled from runs on the loaded machine of 2026-12-07 and are
# rougher (capture: 229 s per identity at a load of ~20, about a tenth of a core).
COST = {"capture_per_identity": 30.0, "run_per_identity": 110.0, "ar_step": 0.72, "features_per_identity": 30.0,
        "decoder_step": 1.0, "generated_point": 0.004, "reenact_per_identity_variant": 15.0}


def step_names(cfg: ExperimentConfig) -> list[str]:
    """The recipe's steps in order."""
    return ["capture", "split", "run", "train_ar", *[f"decoder_{v}" for v in cfg.decoder_variants], "generate",
            "reenact", "claims"]


def estimate_seconds(cfg: ExperimentConfig, workers: int) -> dict[str, float]:
    """Seconds each step should take on the measured machine (:data:`COST`)."""
    n, t = cfg.identities, cfg.n_test
    ar, dec = cfg.ar_config("-", "-"), cfg.decoder_config("-", "-", "-", "-", "both", "-")
    return {"capture": COST["capture_per_identity"] * n, "split": 0.0,
            "run": COST["run_per_identity"] * n * 2 / max(1, workers),
            "train_ar": COST["ar_step"] * ar.steps * ar.batch_size * ar.window / 4096,
            **{f"decoder_{v}": COST["decoder_step"] * dec.steps for v in cfg.decoder_variants},
            # the first variant teacher-forces every training identity through the AR model (cached)
            f"decoder_{cfg.decoder_variants[0]}": COST["decoder_step"] * dec.steps
            + COST["features_per_identity"] * (n - t),
            # two clouds per test identity: from its portrait and from a source frame never trained on
            "generate": 2 * COST["generated_point"] * cfg.max_points * t,
            "reenact": COST["reenact_per_identity_variant"] * t * len(cfg.decoder_variants) * cfg.eval_timesteps / 2,
            "claims": 10.0 + 2.0 * n}


def capture_part(cfg: ExperimentConfig) -> dict[str, Any]:
    """The part of ``cfg`` the ``capture`` step's done-marker hashes: the synthetic capture's
    settings and, for an existing capture (``--capture``), its resolved folder and the text of
    its ``capture.json`` (``None`` when unreadable), so another capture, or one rendered again
    in the same folder, runs the step and everything after it again."""
    part: dict[str, Any] = {k: getattr(cfg, k) for k in ("identities", "timesteps", "seed", "flame")}
    if cfg.capture:
        folder = Path(cfg.capture).resolve()
        try:
            summary = (folder / "capture.json").read_text()
        except OSError:  # the step itself says what is wrong with the folder
            summary = None
        part["capture"] = {"folder": str(folder), "capture.json": summary}
    return part


class _Steps:
    """Done-markers under ``<out>/steps`` and the console lines of each step."""

    def __init__(self, out: Path, names: list[str], console: Console) -> None:
        self.dir, self.names, self.console = out / "steps", names, console
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ran: list[str] = []

    def marker(self, name: str) -> dict | None:
        p = self.dir / f"{name}.json"
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except json.JSONDecodeError:  # a torn marker counts as not done
            return None

    def key(self, name: str, part: Any, deps: list[str]) -> str:
        # an upstream step that ran again has a new run id: everything after it runs again
        return config_hash({"step": name, "config": part, "after": {d: (self.marker(d) or {}).get("run_id")
                                                                     for d in deps}})

    def run(self, name: str, part: Any, deps: list[str], fn: Callable[[str], dict]) -> dict:
        i = self.names.index(name) + 1
        key = self.key(name, part, deps)
        m = self.marker(name)
        if m and m.get("key") == key:
            self.console.print(f"[bold cyan][{i}/{len(self.names)}] {name}[/]: done earlier (skipped)")
            return m.get("figures") or {}
        self.console.print(f"[bold cyan][{i}/{len(self.names)}] {name}[/] ...")
        t0 = time.perf_counter()
        figures = fn(key) or {}
        wall = round(time.perf_counter() - t0, 1)
        rec = {"step": name, "key": key, "run_id": f"{time.time_ns()}", "wall_s": wall,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "figures": figures}
        atomic_write_text(self.dir / f"{name}.json", json.dumps(rec, indent=1, default=str))
        self.ran.append(name)
        text = ", ".join(f"{k} {v}" for k, v in figures.items() if not isinstance(v, dict | list))
        self.console.print(f"      done in {wall:.1f} s" + (f": {text}" if text else ""), soft_wrap=True)
        return figures


def run_experiment(cfg: ExperimentConfig, console: Console | None = None) -> dict:
    """Run (or continue) the experiment into ``cfg.out``; returns ``{"steps_run": [...],
    "claims": <claims.json>}``.

    Raises:
        SplitLeakError: a trainer would train on a test identity.
        InputError and the stages' domain errors: bad inputs, a failed dataset run.
    """
    import os

    from pointillist_data.flame import resolve_flame_asset

    console = console or Console()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment_config.json", json.dumps(cfg.to_dict(), indent=1))
    names = step_names(cfg)
    workers = cfg.workers or min(os.cpu_count() or 1, cfg.identities)
    est = estimate_seconds(cfg, workers)
    steps = _Steps(out, names, console)
    left = sum(v for k, v in est.items() if not steps.marker(k))
    console.print(f"[bold]experiment[/]: {cfg.identities} identities ({cfg.identities - cfg.n_test} train / "
                  f"{cfg.n_test} test), {len(names)} steps ({', '.join(names)}); estimated {left / 60:.0f} min "
                  f"on a 2-core CPU machine for the steps not done -> {out}", soft_wrap=True)
    asset = resolve_flame_asset(cfg.flame)

    ctx = S.Context(cfg, out, asset, console, workers)
    steps.run("capture", capture_part(cfg), [], lambda key: S.capture(ctx))
    steps.run("split", {"n_test": cfg.n_test, "seed": cfg.seed}, ["capture"], lambda key: S.split(ctx))
    steps.run("run", {"tracking": cfg.tracking, "fitting": cfg.fitting}, ["split"], lambda key: S.dataset_run(ctx))
    ar_part = {"ar": cfg.ar, **{k: getattr(cfg, k) for k in ("nll_every", "nll_windows", "seed", "device")}}
    steps.run("train_ar", ar_part, ["run"], lambda key: S.train_ar(ctx, key))
    for v in cfg.decoder_variants:
        steps.run(f"decoder_{v}", {"decoder": cfg.decoder, "variant": v, "seed": cfg.seed, "device": cfg.device},
                  ["train_ar"],
                  lambda key, v=v: S.train_decoder(ctx, v, key))
    steps.run("generate", {"max_points": cfg.max_points, "seed": cfg.seed}, ["train_ar"], lambda key: S.generate(ctx))
    steps.run("reenact", {"timesteps": cfg.eval_timesteps, "scale": cfg.eval_render_scale, "seed": cfg.seed},
              [f"decoder_{v}" for v in cfg.decoder_variants], lambda key: S.reenact(ctx))
    steps.run("claims", {"nll_windows": cfg.nll_windows}, ["generate", "reenact"], lambda key: S.claims(ctx))
    claims = json.loads((out / "claims" / "claims.json").read_text())
    for row in claims["rows"]:
        style = "green" if row["verdict"] == "holds" else "yellow"
        console.print(f"  [{style}]{row['verdict']}[/]: {row['claim']}: {row['summary']}", soft_wrap=True)
    console.print(f"claims: [bold]{out / 'claims' / 'claims.md'}[/], picture [bold]{out / 'claims' / 'claims.png'}[/]",
                  soft_wrap=True)
    return {"steps_run": steps.ran, "claims": claims}
