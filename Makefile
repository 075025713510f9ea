# One obvious way to run anything. `make run` and `make test` set up everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
JARS := deploy/kafka/target/dependency/.fetched

.PHONY: setup run test lint typecheck unit schemas postgres-server clean

setup: $(INSTALLED) $(JARS) postgres-server

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The real Apache Kafka broker, from Maven Central (deploy/kafka/pom.xml).
$(JARS): deploy/kafka/pom.xml
	cd deploy/kafka && mvn -q -B dependency:copy-dependencies
	touch $@

# Debian's PostgreSQL server binaries for the tests' throwaway cluster (installed once if missing).
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql server ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql; }

run: $(INSTALLED) $(JARS)
	$(BIN)/deskbridge up

lint: $(INSTALLED)
	$(BIN)/ruff check services schemas migrations tests bench faults devstack
	$(BIN)/ruff format --check services schemas migrations tests bench faults devstack
	$(BIN)/lint-imports

typecheck: $(INSTALLED)
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q

schemas: $(INSTALLED)
	$(BIN)/python -m schemas.export

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# Throughput and latency against the limits of deskbridge's own parts, into docs/performance.md and
# docs/performance.png (about ten minutes). Not part of `make test`, which smoke-runs it with --quick.
.PHONY: bench faults
bench: $(INSTALLED) $(JARS) postgres-server
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench.run

# A bounded load while the broker, the gateway, ingest, audit and the database are killed and restarted,
# on one broker and on a 3-broker KRaft cluster, then schemathesis on both APIs; into docs/reliability.md
# (about eight minutes). `make test` runs the short scenarios (tests/faults/test_scenarios.py).
faults: $(INSTALLED) $(JARS) postgres-server
	$(BIN)/python -m faults.run
