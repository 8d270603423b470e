"""The done-markers of `pointillist experiment` (pipelines/experiment.py) without running the
recipe: which changes make a step run again."""

from __future__ import annotations

import json

from rich.console import Console


def _capture(folder, participants):
    folder.mkdir()
    (folder / "capture.json").write_text(json.dumps({"participants": {f"{p:03d}": {"gaussians": 10}
                                                                      for p in participants}}))
    return folder


def test_capture_step_runs_again_for_another_or_a_rerendered_capture(tmp_path):
    from pipelines.experiment import _Steps, capture_part
    from pipelines.experiment_config import ExperimentConfig

    a, b = _capture(tmp_path / "a", [900, 901, 902]), _capture(tmp_path / "b", [910, 911, 912])
    steps = _Steps(tmp_path / "exp", ["capture"], Console(quiet=True))
    ran = []

    def step(folder):
        cfg = ExperimentConfig(out=str(tmp_path / "exp"), capture=str(folder), identities=3, n_test=1)
        steps.run("capture", capture_part(cfg), [], lambda key: ran.append(folder.name) or {})

    step(a)
    step(a)  # the same capture: done earlier
    assert ran == ["a"]
    step(b)  # another --capture: the step (and through its run id, every later one) runs again
    assert ran == ["a", "b"]
    step(a)
    assert ran == ["a", "b", "a"]
    (a / "capture.json").write_text((a / "capture.json").read_text().replace('"gaussians": 10', '"gaussians": 12'))
    step(a)  # rendered again into the same folder
    assert ran == ["a", "b", "a", "a"]
    step(a)
    assert ran == ["a", "b", "a", "a"]
    # a rendered capture (no --capture) keeps the key it had before --capture was part of it
    own = ExperimentConfig(out=str(tmp_path / "exp"), identities=3, n_test=1)
    assert capture_part(own) == {"identities": 3, "timesteps": 4, "seed": 0, "flame": None}
