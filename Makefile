# pointillist: data pipeline and models for AvatarPointillist-style head-avatar datasets.
# `make demo` and `make test` each install what they need into .venv on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CLI    := $(VENV)/bin/pointillist
EXTRAS ?= landmarks,dino,s3,dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# `make demo` needs no extra: the base set alone, unless the full set is already there
DEMO_STAMP := $(if $(wildcard $(STAMP)),$(STAMP),$(VENV)/.installed-base)

.PHONY: setup test test-fast demo experiment lint docs bench clean data landmarks track fit canonicalize tokenize supervise shard

# `make data NERSEMBLE=/data/nersemble FLAME=/models/flame2023.pkl OUT=/data/out PARTICIPANTS=17,18 \
#            SEQUENCES=union SCALE=1/4`
# SEQUENCES: names or prefixes (EMO-1,EXP-2), all, or union (GaussianAvatars' ten); empty = the union
# ones present, else all present. SCALE: fraction of 2200x3208 (empty = 1/4). FRAMES: all,
# start:stop[:step] or a list. CAMERAS: serials or indices (empty = all 16). YES=1: start without asking.
NERSEMBLE    ?= $(error set NERSEMBLE=/path/to/nersemble)
OUT_DATA     ?= out/data
PARTICIPANTS ?= all
SEQUENCES    ?=
SCALE        ?=
FRAMES       ?=
CAMERAS      ?=
FLAME        ?=
WORKERS      ?=
RUN = $(CLI) run --capture $(NERSEMBLE) --out $(if $(OUT),$(OUT),$(OUT_DATA)) --participants $(PARTICIPANTS) \
	$(if $(SEQUENCES),--sequences $(SEQUENCES)) $(if $(SCALE),--scale $(SCALE)) $(if $(FRAMES),--frames $(FRAMES)) \
	$(if $(CAMERAS),--cameras $(CAMERAS)) $(if $(FLAME),--flame $(FLAME)) $(if $(WORKERS),--workers $(WORKERS))

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls several GB of CUDA wheels.
# One stamp per set of extras (the base set installs in about half the time of all of them).
$(VENV)/.installed%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".$(if $(INSTALL_EXTRAS),[$(INSTALL_EXTRAS)])"
	touch $@

$(STAMP): INSTALL_EXTRAS = $(EXTRAS)
$(VENV)/.installed-base: INSTALL_EXTRAS =

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

DEMO_OUT = $(if $(OUT),$(OUT),out/demo)
# the demo validates and inspects both stores and ends with the evaluation protocol itself
demo: $(DEMO_STAMP)
	$(CLI) demo --out $(DEMO_OUT)

# the held-out identities experiment (issue 30): IDENTITIES synthetic identities, N_TEST held out,
# `run` at reduced budgets, train-ar, the decoder variants, the claims table (OUT/claims/claims.md).
# Resumable: run it again after an interruption. `make experiment IDENTITIES=8 N_TEST=3 AR_STEPS=600`
# is a smaller one; CONFIG=file.json sets any ExperimentConfig field (`pointillist experiment --help`).
EXPERIMENT_OUT = $(if $(OUT),$(OUT),out/experiment)
IDENTITIES    ?= 48
N_TEST        ?= 8
AR_STEPS      ?=
DECODER_STEPS ?=
CONFIG        ?=
experiment: $(DEMO_STAMP)
	$(CLI) experiment --out $(EXPERIMENT_OUT) --identities $(IDENTITIES) --n-test $(N_TEST) \
	  $(if $(AR_STEPS),--ar.steps $(AR_STEPS)) $(if $(DECODER_STEPS),--decoder.steps $(DECODER_STEPS)) \
	  $(if $(WORKERS),--workers $(WORKERS)) $(if $(CONFIG),--config $(CONFIG))

# the plan first (`run --dry-run`: selection, bytes, CPU-hours, skipped stages, problems), then a
# question; YES=1 starts without asking
data: setup
	$(RUN) --dry-run
	@if [ "$(YES)" != 1 ]; then printf 'start this run? [y/N] '; read answer; case "$$answer" in y|Y|yes) ;; \
	  *) echo "not started (YES=1 starts without asking)"; exit 1;; esac; fi
	$(RUN)

# one target per stage: run every participant up to that stage (earlier stages resume)
landmarks track fit canonicalize tokenize supervise: setup
	$(RUN) --until $@

shard: data

lint: setup
	$(VENV)/bin/ruff check pointillist_data pointillist_model pipelines tests benchmarks

# the command reference, generated from the commands (tests/test_cli_reference.py keeps it current)
docs: setup
	$(PY) -m pipelines.cli_reference --write docs/CLI.md

bench: setup
	$(PY) -m benchmarks.run --out benchmarks/results.json

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
