"""``make bench``: run the benchmarks and write their figures to a JSON file.

Each benchmark module exposes ``run() -> dict``; figures carry units in their keys.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
from pathlib import Path

import torch

BENCHMARKS = ["benchmarks.bench_render", "benchmarks.bench_tokens", "benchmarks.bench_store", "benchmarks.bench_ar",
              "benchmarks.bench_scale", "benchmarks.bench_decoder", "benchmarks.bench_dataset", "benchmarks.bench_cli",
              "benchmarks.bench_track_video", "benchmarks.bench_matting", "benchmarks.bench_pipeline"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    ap.add_argument("--only", nargs="*", help="module names to run (default: all)")
    args = ap.parse_args()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                           "torch": torch.__version__, "cuda": torch.cuda.is_available()}}
    if args.out.exists():
        results = {**json.loads(args.out.read_text()), **{k: results[k] for k in ("date", "machine")}}
    for name in BENCHMARKS:
        short = name.split(".")[-1]
        if args.only and short not in args.only:
            continue
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        print(f"== {short}")
        t = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        results[short] = mod.run()
        if isinstance(results[short], dict):  # each section says when it ran (--only updates some)
            results[short]["date"] = t
        print(json.dumps(results[short], indent=1))
        args.out.write_text(json.dumps(results, indent=1))
    args.out.write_text(json.dumps(results, indent=1))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
