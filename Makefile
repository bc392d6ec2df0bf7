# make run  : install into .venv, migrate, load demo data, serve on http://$(HOST):$(PORT)
#             (python -m config.serve: granian, one worker per core unless WORKERS=N, dead workers replaced)
# make test : install into .venv (and the system tools the tests drive) and run the whole suite
#             in TEST_WORKERS pytest-xdist worker processes (TEST_WORKERS=0: in one process)
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?=
# More workers than the 2 cores pay: most tests wait on servers, browsers and sleeps (docs/testing.md).
TEST_WORKERS ?= 3
STAMP := $(VENV)/.installed

.PHONY: help install system-deps run serve test lint bench

help:
	@echo "make run    - install, migrate and serve the console on http://$(HOST):$(PORT) (no services needed)"
	@echo "make test   - install and run the whole test suite"
	@echo "make lint   - ruff"
	@echo "make bench  - run the benchmarks under bench/"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Tools the tests drive for real: redis-server (+ redis-cli for the cluster) and
# Debian's Chromium for the browser tests. Installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py autoplay_bootstrap
	$(PY) -m config.serve --host $(HOST) --port $(PORT) $(if $(WORKERS),--workers $(WORKERS))

test: install system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: install
	$(VENV)/bin/ruff check .

$(VENV)/.bench-installed: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

bench: install system-deps $(VENV)/.bench-installed
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
