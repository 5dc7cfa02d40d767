# Two commands on a fresh machine: `make run` and `make test`. Both set up
# everything first (idempotently): the venv with pinned packages, and for the
# tests the Chromium that loads the scheduler's web UI.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRA := $(if $(GPU),gpu,cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
# Packages only tests and benchmarks import (tests/requirements.txt): a folder of their own, which
# tests/conftest.py and bench/tables.py put on sys.path. In the venv itself, Keras would import
# scikit-learn into every `import tensorflow` of the pipeline (0.85 s each).
TEST_PACKAGES := $(VENV)/test-packages
TEST_STAMP := $(TEST_PACKAGES)/.installed

# The central scheduler (luigid): loopback only by default, its web UI has no login.
SCHEDULER_HOST ?= 127.0.0.1
SCHEDULER_PORT ?= 8082
SCHEDULER_DIR ?= var/luigid
LUIGID := $(PY) -m pipeline.cli.luigid --host $(SCHEDULER_HOST) --port $(SCHEDULER_PORT) --dir $(SCHEDULER_DIR)
SCHEDULER_UI := http://$(SCHEDULER_HOST):$(SCHEDULER_PORT)

# Debian's Chromium, for the test that looks at the web UI (root here; sudo elsewhere).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

.PHONY: setup run scheduler scheduler-stop browser test lint bench clean-venv

# The package's bytecode, as pip writes it for installed packages: an editable install gets
# none when PYTHONDONTWRITEBYTECODE is set, and every command would compile the package anew
# (about 30 ms of each up-to-date check). Only changed files are compiled again.
setup: $(STAMP)
	@$(PY) -m compileall -q pipeline

$(STAMP): pyproject.toml tests/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRA),dev]'
	$(PY) -m pip uninstall --quiet --yes -r tests/requirements.txt 2>/dev/null  # an older venv's copies
	touch $@

$(TEST_STAMP): tests/requirements.txt $(STAMP)
	rm -rf $(TEST_PACKAGES)
	$(PY) -m pip install --quiet --no-deps --target $(TEST_PACKAGES) -r tests/requirements.txt
	touch $@

# Start luigid (a no-op when one answers already); state and log in $(SCHEDULER_DIR).
scheduler: setup
	$(LUIGID) start

scheduler-stop:
	test ! -x $(PY) || $(LUIGID) stop

run: scheduler
	@echo "Watch the run in the scheduler's web UI: $(SCHEDULER_UI)"
	$(VENV)/bin/luigi --module pipeline PlotInference --scheduler-host $(SCHEDULER_HOST) --scheduler-port $(SCHEDULER_PORT)
	$(PY) -m pipeline status PlotInference
	@echo "Scheduler web UI: $(SCHEDULER_UI) (luigid keeps running; make scheduler-stop stops it)"

browser: $(CHROMIUM)

$(CHROMIUM):
	apt-cache show chromium >/dev/null 2>&1 || $(SUDO) apt-get update -q
	$(APT_INSTALL) || { $(SUDO) apt-get update -q && $(APT_INSTALL); }

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Two pytest workers (pytest-xdist), one test file at a time each: module fixtures stay shared
# within a file, and most tests wait on subprocesses, luigid or chromium as much as they compute
# (13 min 7 s on one worker, 7 min 11 s on two, on this 2-core machine). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

test: lint browser $(TEST_STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

# Benchmarks: each prints its figures and ratios, none asserts; the latest results are in docs/benchmarks.md.
# Run them on a quiet machine (the load average is printed). Not bench/crash_trials.py:
# a crash test (the test suite runs it; `$(PY) bench/crash_trials.py` runs more trials).
BENCHMARKS := input_stall input_pipeline etl_scaling growth schedule_check source_scaling runs_table tables search seed_setting end_to_end remote interrupt_rerun

bench: setup $(TEST_STAMP)
	@for name in $(BENCHMARKS); do \
		echo "== $$name: $(PY) -m bench.$$name"; \
		TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m bench.$$name || exit 1; \
		echo; \
	done

clean-venv:
	rm -rf $(VENV)
