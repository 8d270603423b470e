#!/usr/bin/env bash
# The GPU check as one prepared call on a CUDA machine: the repository's venv (or $PYTHON), a
# hard limit of 9 minutes around the script's own 8-minute budgets, results in benchmarks/gpu_check/.
#   benchmarks/gpu_check.sh [--wheelhouse wheels/] [--sections render fit ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec timeout 540 "$PY" benchmarks/gpu_check.py --out benchmarks/gpu_check "$@"
