"""Start-up of the command line: wall seconds of ``pointillist --help`` and of every command's
``--help`` in a fresh interpreter (best of three; target <= 1.0 s each on the 2-core machine).

The figure is the import cost of the typer app: commands import torch, colour-science and the
stage code only inside their bodies, and :mod:`pointillist_data.capture` loads its members on
first use.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time


def _commands() -> list[str]:
    from typer.main import get_command

    from pipelines.cli import app

    return sorted(get_command(app).commands)


def _best_of(argv: list[str], n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def run() -> dict:
    exe = shutil.which("pointillist") or str(__import__("pathlib").Path(sys.executable).with_name("pointillist"))
    per = {c: round(_best_of([exe, c, "--help"]), 3) for c in _commands()}
    top = round(_best_of([exe, "--help"]), 3)
    return {"help_s": top, "command_help_s": per, "slowest_command_help_s": max(per.values()),
            "slowest_command": max(per, key=per.get), "target_s": 1.0}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
