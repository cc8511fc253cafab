# Conveyor — every target creates the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
# The Node.js client of tests/e2e/test_node_client.py (a non-Python caller of the contracts).
NODE_GRPC := .tools/node_modules/@grpc/grpc-js/package.json
NODE_GRPC_PACKAGES := @grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1 protobufjs@7.6.6
PYTEST_ARGS ?= -x -q
# Test worker processes (pytest-xdist); 0 runs the suite in this process.
PYTEST_WORKERS ?= 2

.PHONY: run test protos lint typecheck bench clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

$(BUF):
	mkdir -p .tools
	cd .tools && npm install --silent --no-audit --no-fund @bufbuild/buf@$(BUF_VERSION)

$(NODE_GRPC): | $(BUF)
	cd .tools && npm install --silent --no-audit --no-fund $(NODE_GRPC_PACKAGES)

## run: the whole platform on the embedded default (SQLite + in-process coordination)
run: venv
	$(PY) -m conveyor_core.cli run --example

## test: the whole suite (PostgreSQL/Redis tests skip unless found, or fail under CONVEYOR_REQUIRE_SERVICES=1)
test: venv $(BUF) $(NODE_GRPC)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## protos: regenerate the Python stubs in libs/conveyor_proto from protos/
protos: venv
	$(PY) protos/generate.py

## lint: buf lint on the contracts, ruff on the code, then mypy (make typecheck)
lint: venv $(BUF)
	$(BUF) lint protos
	$(VENV)/bin/ruff check libs services tests protos
	$(PY) tests/typecheck.py

## typecheck: mypy --strict on services/, conveyor_core and conveyor_sdk, import names resolved
typecheck: venv
	$(PY) tests/typecheck.py

## bench: throughput and latency benchmarks on PostgreSQL (see docs/benchmarks.md)
bench: venv
	$(PY) -m tests.bench.run
	$(PY) -m tests.bench.sdk_tasks
	$(PY) -m tests.bench.workflow_consumer

clean:
	rm -rf $(VENV) .tools data .bench .typecheck
