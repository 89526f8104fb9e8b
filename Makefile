# Every target sets up .venv first (idempotent; see scripts/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
IMAGE ?= dynamodb-replicator:latest
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup run test unit lint bench image clean

setup:
	@scripts/bootstrap.sh

## make run: the embedded demo (local DynamoDB endpoint, demo tables, live progress, convergence check)
run: setup
	$(BIN)/replicator demo $(DEMO_ARGS)

## make test: lint, then the whole test suite (unit, moto end to end, real KCL, Prometheus, reliability)
test: setup lint
	scripts/ensure-prometheus.sh
	$(PY) -m pytest $(PYTEST_ARGS)

## make unit: the fast tests only
unit: setup
	$(PY) -m pytest -m "not kcl and not prometheus and not reliability" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check replicator tests bench
	$(BIN)/ruff format --check replicator tests bench
	$(BIN)/mypy --strict replicator

bench: setup
	$(PY) -m bench

image:
	docker build -f docker/Dockerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
