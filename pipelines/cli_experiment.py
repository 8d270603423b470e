"""``pointillist experiment``: the held-out identities experiment (``make experiment``)."""

from __future__ import annotations

from .app import app, console
from .config_cli import config_command
from .experiment_config import ExperimentConfig


@config_command(app, "experiment", ExperimentConfig)
def experiment_cmd(cfg: ExperimentConfig) -> None:
    """Synthetic identities -> split -> run -> train-ar -> train-decoder variants -> the paper's
    claims on the held-out test identities (claims.json / .md / .png); resumable at every step."""
    from .experiment import run_experiment

    run_experiment(cfg, console)
