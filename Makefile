# pointillist: data pipeline and models for AvatarPointillist-style head-avatar datasets.
# `make demo` and `make test` each install what they need into .venv on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CLI    := $(VENV)/bin/pointillist
STAMP  := $(VENV)/.installed
OUT    ?= out/demo
EXTRAS ?= landmarks,dino,s3,dev

.PHONY: setup test test-fast demo lint bench clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(CLI) demo --out $(OUT)

lint: setup
	$(VENV)/bin/ruff check pointillist_data pointillist_model pipelines tests benchmarks

bench: setup
	$(PY) -m benchmarks.run --out benchmarks/results.json

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
