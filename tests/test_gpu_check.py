"""benchmarks/gpu_check.py in its CPU smoke mode, in a subprocess: every section runs at tiny
sizes or says why not, the JSON and the markdown table have the documented structure, and
the numbers the CPU can compute are finite. The synthetic capture is the session's (built
once for the tracking and fitting tests), so the subprocess itself stays small; the fit
section starts from the track section's export."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["render", "track", "fit", "train", "generate"]


def _numbers(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _numbers(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield v


def test_smoke_mode(synthetic_capture, tmp_path):
    root, _, _ = synthetic_capture
    out = tmp_path / "gc"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out),
                        "--capture", str(root)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["smoke"] is True and res["device"] == "cpu" and list(res["sections"]) == SECTIONS
    for name, sec in res["sections"].items():
        # every CUDA part is skipped with a line naming it and saying why, in the JSON and on stdout
        assert sec["status"] == "partial", (name, sec.get("error"), sec.get("traceback"))
        assert sec["skipped"] and all("needs CUDA" in s for s in sec["skipped"]), sec["skipped"]
        for s in sec["skipped"]:
            assert f"{name}: skipped: {s}" in r.stdout
        assert sec["seconds"] <= sec["budget_s"]
        nums = list(_numbers(sec["figures"]))
        assert nums and all(math.isfinite(x) for x in nums), (name, sec["figures"])
    f = res["sections"]
    assert f["render"]["figures"]["cpu_fwd_bwd_s_N2000_110x160"] > 0
    assert 0 < f["render"]["figures"]["cpu_alpha_mean"] < 1  # the head covers part of the image
    assert f["track"]["figures"]["sequential_steps"] == 2 and f["track"]["figures"]["global_iterations"] == 3
    assert f["fit"]["figures"]["cpu"]["iterations_per_s"] > 0 and f["fit"]["figures"]["iterations"] == 6
    assert f["train"]["figures"]["ar"]["loss_finite"] is True and f["train"]["figures"]["decoder"]["loss_finite"]
    # an untrained model's next-token loss is about ln(vocabulary): 1024 bins + 10144 faces + 3 specials
    assert abs(f["train"]["figures"]["ar"]["loss_last"] - math.log(1024 + 10144 + 3)) < 1.5
    assert f["generate"]["figures"]["eager_batch1"]["tokens_per_avatar"] == 44  # (48 - 8) // 4 points, 4 tokens each
    md = (out / "gpu_check.md").read_text().splitlines()
    assert md[0].startswith("# GPU check: cpu") and "| section | status | s | figure | value |" in md
    for name in SECTIONS:
        assert any(line.startswith(f"| {name} | partial | ") for line in md), name
    assert sum(line.startswith("- ") and ": skipped: " in line for line in md) == \
        sum(len(s["skipped"]) for s in f.values())


def test_without_cuda_the_full_mode_refuses_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and r.stderr.strip() == "error: no CUDA device (use --smoke for the CPU check)"
    assert not (tmp_path / "gpu_check.json").exists()
