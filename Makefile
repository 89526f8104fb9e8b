# Every target sets up .venv first (idempotent; see scripts/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
IMAGE ?= dynamodb-replicator:latest
PYTEST_ARGS ?=
# Test processes: most end-to-end tests wait on servers, daemons and leases, not on CPU,
# so four share two cores well (three left a third of both cores idle); each test file
# runs whole in one process.
TEST_WORKERS ?= 4
DEMO_ARGS ?=

.PHONY: setup run test unit lint bench kcl-jars image constraints clean

setup:
	@scripts/bootstrap.sh

## make run: the embedded demo (local DynamoDB endpoint, demo tables, live progress, convergence check)
run: setup
	$(BIN)/replicator demo $(DEMO_ARGS)

## make test: lint, then the whole test suite (unit, moto end to end, real KCL, Prometheus, reliability)
test: setup lint kcl-jars
	scripts/ensure-prometheus.sh
	scripts/ensure-debian-package.sh tini tini
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

## make unit: the suite less its real-KCL, Prometheus and reliability tests (no Java needed)
unit: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not kcl and not prometheus and not reliability" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check replicator tests bench
	$(BIN)/ruff format --check replicator tests bench
	$(BIN)/mypy --strict replicator

bench: setup
	$(PY) -m bench

## make kcl-jars: the KCL 3 / DynamoDB Streams adapter jars and the launcher (Maven, once per pom and launcher change)
kcl-jars:
	@scripts/build-kcl.sh >/dev/null

## make image: the Docker image (needs a Docker engine, and Maven Central for the jars)
image:
	@docker info >/dev/null 2>&1 || { echo "make image: needs docker on PATH and a running Docker engine (the build also downloads the KCL jars from Maven Central)" >&2; exit 1; }
	docker build -f docker/Dockerfile -t $(IMAGE) .

## make constraints: constraints.txt anew, from the newest releases pyproject.toml allows, for Python 3.11 as the image (then run make test)
CONSTRAINTS_PYTHON ?= python3.11
constraints:
	rm -rf .cache/constraints-venv
	VENV=.cache/constraints-venv PYTHON=$(CONSTRAINTS_PYTHON) CONSTRAINTS= KCLPY_WITH_JARS=0 scripts/bootstrap.sh
	{ sed -n '/^#/p' constraints.txt; .cache/constraints-venv/bin/python -m pip freeze --exclude-editable \
	  | grep -v -i -e '^amazon.kclpy' -e '^dynamodb-replicator' -e '^-e'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .cache/constraints-venv
	@echo "constraints.txt written: run make test before committing it"

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
