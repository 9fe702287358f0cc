# mbstudy: the reproduce pipeline. `make` (or `make help`) lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

GRID     ?= default
SWEEP    ?=
PARTIAL  ?=
DRY_RUN  ?=
SET      ?=
WORKERS  ?=
EXECUTOR ?= local
PORT     ?= 5000
PG_PORT  ?= 5433
RAY_PORT ?= 6379
# optional extras, each with its own requirements-EXTRA.lock: bench ray server browser
EXTRAS   ?=
BACKEND_STORE_URI     ?=
ARTIFACTS_DESTINATION ?=
comma := ,
KNOWN_EXTRAS := bench ray server browser
# the store: MLFLOW_TRACKING_URI if set, else mlflow.db in the project root
URI     := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)

.PHONY: help setup test test-fast lock clean-venv sweep ui server server-stop ray-start ray-stop equivalence reduction baselines study study-extended study-quick figures report bench bench-full setup-bench measure-throughput

# `make help`: the targets in a column as wide as the longest name, each description wrapped to the terminal
# (COLUMNS, else 100 characters) with its continuation lines under the description's first character
HELP_COLUMNS ?= $(or $(COLUMNS),100)
help: ## list the targets
	@echo "mbstudy — make TARGET [VAR=value ...]"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -v cols=$(HELP_COLUMNS) 'BEGIN {FS = ":.*## "} \
	  {name[NR] = $$1; desc[NR] = $$2; if (length($$1) > w) w = length($$1)} \
	  END {room = cols - w - 4; if (room < 30) room = 30; pad = sprintf("%" (w + 4) "s", ""); \
	       for (i = 1; i <= NR; i++) { n = split(desc[i], word, " "); line = ""; first = 1; \
	         for (j = 1; j <= n; j++) { \
	           if (line != "" && length(line) + 1 + length(word[j]) > room) { \
	             if (first) printf "  \033[36m%-" w "s\033[0m  %s\n", name[i], line; else printf "%s%s\n", pad, line; \
	             first = 0; line = word[j] } else line = (line == "" ? word[j] : line " " word[j]) } \
	         if (first) printf "  \033[36m%-" w "s\033[0m  %s\n", name[i], line; else printf "%s%s\n", pad, line } }'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Install each named extra's lock once (a stamp per extra, redone when its lock or the base changes).
define install-extras
	@for e in $(sort $(subst $(comma), ,$(1))); do \
	  case " $(KNOWN_EXTRAS) " in *" $$e "*) ;; *) echo "EXTRAS: unknown extra '$$e'$$($(PYTHON) -c 'import difflib, sys; m = difflib.get_close_matches(sys.argv[1], sys.argv[2:], 1); print(f" (did you mean {m[0]!r}?)" if m else "")' $$e $(KNOWN_EXTRAS)); expected some of: $(KNOWN_EXTRAS)" >&2; exit 2;; esac; \
	  stamp=$(VENV)/.extra-$$e-stamp; \
	  if [ ! -f $$stamp ] || [ requirements-$$e.lock -nt $$stamp ] || [ $(STAMP) -nt $$stamp ]; then \
	    echo "installing the '$$e' extra (requirements-$$e.lock)"; \
	    $(PY) -m pip install --quiet --disable-pip-version-check -r requirements-$$e.lock && touch $$stamp || exit 1; \
	  fi; \
	done
endef

setup: $(STAMP) ## create .venv from requirements.lock, plus EXTRAS="ray server browser bench" if named
	$(call install-extras,$(EXTRAS))

test: $(STAMP) ## run every test: unit, doctests, the slow end-to-end ones, Ray, PostgreSQL and the browser
	$(call install-extras,ray server browser $(EXTRAS))
	$(PY) -m pytest

test-fast: setup ## the tests without the slow end-to-end ones
	$(PY) -m pytest -m "not slow"

sweep: $(STAMP) ## train a sweep into MLflow: GRID=default|science|... (experiments/grids/) or GRID=path/to/mine.toml (any directory; relative to this one; its MLflow experiment is "mine"), SET="key=value ...", WORKERS=n, EXECUTOR=local|ray, DRY_RUN=1 (check, count, estimate; writes nothing)
	$(call install-extras,$(EXTRAS) $(if $(filter ray,$(EXECUTOR)),ray))
	$(PY) -m experiments.sweep "$(GRID)" --executor $(EXECUTOR) $(foreach s,$(SET),--set $(s)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(DRY_RUN),--dry-run)

server: $(STAMP) ## MLflow tracking server on 127.0.0.1:5000 (PORT=n) backed by PostgreSQL (local cluster, or BACKEND_STORE_URI=postgresql://...)
	$(call install-extras,server $(EXTRAS))
	$(PY) -m experiments.engine.server --port $(PORT) --pg-port $(PG_PORT) $(if $(BACKEND_STORE_URI),--backend-store-uri "$(BACKEND_STORE_URI)") $(if $(ARTIFACTS_DESTINATION),--artifacts-destination "$(ARTIFACTS_DESTINATION)")

server-stop: $(STAMP) ## stop the local PostgreSQL of `make server` if it was left running
	$(PY) -m experiments.engine.server --stop

ray-start: $(STAMP) ## a one-machine Ray cluster on 127.0.0.1:6379 (RAY_PORT=n); then RAY_ADDRESS=127.0.0.1:6379 make sweep EXECUTOR=ray
	$(call install-extras,ray)
	RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(VENV)/bin/ray start --head --node-ip-address 127.0.0.1 --port $(RAY_PORT) \
	  $(if $(WORKERS),--num-cpus $(WORKERS)) --include-dashboard=false --disable-usage-stats

ray-stop: $(STAMP) ## stop the Ray processes of `make ray-start`
	$(VENV)/bin/ray stop

equivalence: setup ## log every gradient identity's error, float32 and float64 (Q1, Q2, Q7)
	$(PY) -m experiments.equivalence

reduction: setup ## train sum against mean side by side, with the 1e-7 perturbation control (Q4)
	$(PY) -m experiments.reduction

baselines: setup ## what a linear model reaches on each workload's data (the floor every target must be beyond)
	$(PY) -m experiments.baselines

study: setup ## everything the report uses: the default, science, generalisation, seeds and published sweeps, both experiments and the benchmark, with an ETA across them (resumable)
	$(PY) -m experiments.study

study-extended: setup ## make study, then Q9's sweeps (critical batch size over training, warm-up, data and width scaling) and the CNN's ablation; resumable
	$(PY) -m experiments.study --extended

study-quick: setup ## the same steps on fewer seeds and batch sizes: every section of the report, wider intervals
	$(PY) -m experiments.study --quick

setup-bench: $(STAMP) ## add the optional PyTorch peer of make bench (the same as make setup EXTRAS=bench)
	$(call install-extras,bench)

bench: setup ## time per-example gradients and training steps (quick, ~5 min); PyTorch peers if installed
	$(PY) -m experiments.bench

measure-throughput: setup ## version 1's science grid (one seed) and the default sweep by the code before the throughput work and by this checkout, back to back, answers compared (~16 min; needs the git history)
	$(PY) -m experiments.measure_throughput experiments/throughput/science_v1.toml --set seed=0
	$(PY) -m experiments.measure_throughput default

bench-full: setup ## the same with longer timing budgets
	$(PY) -m experiments.bench --full

figures: setup ## draw report/figures/*.png|pdf from the whole study's runs; SWEEP=name|parent-run-id: one sweep's, into report/sweeps/name/figures/; PARTIAL=dir: whatever the store holds, into dir/figures/
	$(PY) -m analysis.figures $(if $(SWEEP),--sweep "$(SWEEP)") $(if $(PARTIAL),--partial "$(PARTIAL)")

report: setup ## write report/REPORT.md (and its figures) from the whole study's runs (refused, nothing written, if the store lacks part of it); SWEEP=name|parent-run-id: report/sweeps/name/REPORT.md; PARTIAL=dir: whatever the store holds, into dir/
	$(PY) -m analysis.report $(if $(SWEEP),--sweep "$(SWEEP)") $(if $(PARTIAL),--partial "$(PARTIAL)")

ui: setup ## the MLflow UI on http://127.0.0.1:5000 (PORT=n) against the same store; prints each experiment's runs page
	@$(PY) -m experiments.ui --port $(PORT)
	@echo "MLflow UI for $(URI) on http://127.0.0.1:$(PORT) (Ctrl-C stops it)"
	$(VENV)/bin/mlflow ui --backend-store-uri "$(URI)" --host 127.0.0.1 --port $(PORT)

lock: ## re-resolve requirements.lock and every requirements-EXTRA.lock from pyproject.toml, in a scratch venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check -e .
	.lock-venv/bin/pip freeze --all --exclude-editable | grep -vE '^(mbstudy|pip)==' > requirements.lock
	for e in $(KNOWN_EXTRAS); do .lock-venv/bin/python tools/lock_extra.py $$e || exit 1; done
	rm -rf .lock-venv

clean-venv: ## remove .venv
	rm -rf $(VENV)
