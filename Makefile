# mbstudy: the reproduce pipeline. `make` (or `make help`) lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: help setup test test-fast lock clean-venv

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

lock: ## re-resolve requirements.lock from pyproject.toml's ranges, in a scratch venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check -e .
	.lock-venv/bin/pip freeze --all --exclude-editable | grep -vE '^(mbstudy|pip)==' > requirements.lock
	rm -rf .lock-venv

clean-venv: ## remove .venv
	rm -rf $(VENV)
