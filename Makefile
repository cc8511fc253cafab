# Conveyor — every target creates the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
PYTEST_ARGS ?= -x -q

.PHONY: run test protos lint bench clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

$(BUF):
	mkdir -p .tools
	cd .tools && npm install --silent --no-audit --no-fund @bufbuild/buf@$(BUF_VERSION)

## run: the whole platform on the embedded default (SQLite + in-process coordination)
run: venv
	$(PY) -m conveyor_core.cli run --example

## test: the whole suite (PostgreSQL/Redis tests skip unless found, or fail under CONVEYOR_REQUIRE_SERVICES=1)
test: venv $(BUF)
	$(PY) -m pytest $(PYTEST_ARGS)

## protos: regenerate the Python stubs in libs/conveyor_proto from protos/
protos: venv
	$(PY) protos/generate.py

## lint: buf lint on the contracts, ruff on the code
lint: venv $(BUF)
	$(BUF) lint protos
	$(VENV)/bin/ruff check libs services tests protos

## bench: throughput and latency benchmarks on PostgreSQL (see docs/benchmarks.md)
bench: venv
	$(PY) -m tests.bench.run

clean:
	rm -rf $(VENV) .tools data .bench
