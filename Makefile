# mbstudy: the reproduce pipeline. `make` (or `make help`) lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

GRID    ?= default
SET     ?=
WORKERS ?=
PORT    ?= 5000
# the store: MLFLOW_TRACKING_URI if set, else mlflow.db in the project root
URI     := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)

.PHONY: help setup test test-fast lock clean-venv sweep ui equivalence reduction study figures report bench bench-full setup-bench

help: ## list the targets
	@echo "mbstudy — make TARGET"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP) ## create .venv from requirements.lock (quick when up to date)

test: setup ## run every test: unit, doctests and the slow end-to-end ones
	$(PY) -m pytest

test-fast: setup ## the tests without the slow end-to-end ones
	$(PY) -m pytest -m "not slow"

sweep: setup ## train a sweep into MLflow: GRID=default|science|seeds|smoke|path.toml, SET="key=value ...", WORKERS=n
	$(PY) -m experiments.sweep $(GRID) $(foreach s,$(SET),--set $(s)) $(if $(WORKERS),--workers $(WORKERS))

equivalence: setup ## log every gradient identity's error, float32 and float64 (Q1, Q2, Q7)
	$(PY) -m experiments.equivalence

reduction: setup ## train sum against mean side by side, with the 1e-7 perturbation control (Q4)
	$(PY) -m experiments.reduction

study: setup ## everything the write-up needs: the default, science and seeds sweeps and both experiments
	$(PY) -m experiments.sweep default
	$(PY) -m experiments.sweep science
	$(PY) -m experiments.sweep seeds
	$(PY) -m experiments.equivalence
	$(PY) -m experiments.reduction

setup-bench: setup ## add the optional PyTorch peer of make bench (requirements-bench.lock)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.lock

bench: setup ## time per-example gradients and training steps (quick, ~3 min); PyTorch peers if installed
	$(PY) -m experiments.bench

bench-full: setup ## the same with longer timing budgets
	$(PY) -m experiments.bench --full

figures: setup ## draw report/figures/*.png|pdf from whatever runs the store holds
	$(PY) -m analysis.figures

report: setup ## write report/REPORT.md (and its figures) from the runs alone
	$(PY) -m analysis.report

ui: setup ## the MLflow UI on http://127.0.0.1:5000 (PORT=n) against the same store
	@echo "MLflow UI for $(URI) on http://127.0.0.1:$(PORT) (Ctrl-C stops it)"
	$(VENV)/bin/mlflow ui --backend-store-uri "$(URI)" --host 127.0.0.1 --port $(PORT)

lock: ## re-resolve requirements.lock from pyproject.toml's ranges, in a scratch venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check -e .
	.lock-venv/bin/pip freeze --all --exclude-editable | grep -vE '^(mbstudy|pip)==' > requirements.lock
	rm -rf .lock-venv

clean-venv: ## remove .venv
	rm -rf $(VENV)
