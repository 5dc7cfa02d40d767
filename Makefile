# Two commands on a fresh machine: `make run` and `make test`. Both set up
# everything first (idempotently): the venv with pinned packages.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRA := $(if $(GPU),gpu,cpu)
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: setup run test lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRA),dev]'
	touch $@

run: setup
	$(VENV)/bin/luigi --module pipeline PlotInference --local-scheduler
	$(PY) -m pipeline status PlotInference

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

clean-venv:
	rm -rf $(VENV)
