# One obvious way to run anything. `make run` and `make test` set up everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
JARS := deploy/kafka/target/dependency/.fetched
# The TypeScript partner client (clients/typescript/): its npm packages as its lock file pins them, and
# tsc's build into dist/ that bin/deskbridge-partner runs. The console builds its cryptography in from
# these same sources.
TS_NODE_MODULES := clients/typescript/node_modules/.installed
TS_CLIENT := clients/typescript/dist/cli.js
TS_SOURCES := $(shell find clients/typescript/src -type f 2>/dev/null)
# The browser console (console/): its npm packages exactly as the lock file pins them, and its build,
# redone only when a source, the config or the lock changed.
NODE_MODULES := console/node_modules/.installed
CONSOLE := console/dist/index.html
CONSOLE_SOURCES := $(shell find console/src console/public -type f 2>/dev/null) \
  console/index.html console/vite.config.ts console/tsconfig.json $(TS_SOURCES)
# Validators compiled from Strimzi's CRD schemas, for the offline check of deploy/k8s (deploy/schemas/README.md).
STRIMZI_SCHEMAS := deploy/schemas/strimzi/node_modules/.installed
# The Java partner client (clients/java): its jar with its dependencies in target/lib, rebuilt only when
# its pom or a main source changed.
JAVA_CLIENT := clients/java/target/deskbridge-partner.jar
JAVA_CLIENT_SOURCES := $(shell find clients/java/src/main -type f 2>/dev/null) clients/java/pom.xml

.PHONY: setup run test lint typecheck unit schemas postgres-server chromium screenshots clean

setup: $(INSTALLED) $(JARS) $(CONSOLE) $(TS_CLIENT) $(STRIMZI_SCHEMAS) $(JAVA_CLIENT) postgres-server chromium

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The real Apache Kafka broker, from Maven Central (deploy/kafka/pom.xml).
$(JARS): deploy/kafka/pom.xml
	cd deploy/kafka && mvn -q -B dependency:copy-dependencies
	touch $@

$(NODE_MODULES): console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund
	touch $@

$(CONSOLE): $(NODE_MODULES) $(CONSOLE_SOURCES)
	cd console && npx vite build
	touch $@

$(TS_NODE_MODULES): clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund
	touch $@

$(TS_CLIENT): $(TS_NODE_MODULES) $(TS_SOURCES) clients/typescript/tsconfig.json clients/typescript/tsconfig.build.json
	cd clients/typescript && rm -rf dist && npx tsc -p tsconfig.build.json
	touch $@

$(JAVA_CLIENT): $(JAVA_CLIENT_SOURCES)
	cd clients/java && mvn -q -B package -DskipTests
	touch $@

$(STRIMZI_SCHEMAS): deploy/schemas/strimzi/package.json deploy/schemas/strimzi/package-lock.json
	cd deploy/schemas/strimzi && npm ci --no-audit --no-fund
	touch $@

# Debian's PostgreSQL server binaries for the tests' throwaway cluster (installed once if missing).
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql server ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql; }

# Debian's Chromium for the console's end-to-end tests (Playwright drives it; no browser is downloaded),
# with the Noto CJK fonts so Hangul names render in its screenshots.
chromium:
	@[ -x /usr/bin/chromium ] && [ -d /usr/share/fonts/opentype/noto ] || { \
	  echo "installing Debian's chromium and fonts-noto-cjk ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium fonts-noto-cjk; }

run: $(INSTALLED) $(JARS) $(CONSOLE) $(TS_CLIENT) $(JAVA_CLIENT)
	$(BIN)/deskbridge up

lint: $(INSTALLED) $(NODE_MODULES) $(TS_NODE_MODULES)
	$(BIN)/ruff check services schemas migrations tests bench faults devstack
	$(BIN)/ruff format --check services schemas migrations tests bench faults devstack
	$(BIN)/lint-imports
	cd console && npx tsc --noEmit
	cd clients/typescript && npx tsc --noEmit

typecheck: $(INSTALLED)
	$(BIN)/mypy

test: setup lint typecheck
	cd console && npx vitest run
	cd clients/typescript && npx vitest run
	cd clients/java && mvn -q -B test
	$(BIN)/pytest -q

# The console's end-to-end tests again, writing their screenshots into docs/console/ for docs/console.md.
screenshots: setup
	DESKBRIDGE_SCREENSHOTS=docs $(BIN)/pytest -q tests/console

schemas: $(INSTALLED)
	$(BIN)/python -m schemas.export
	$(BIN)/python -m services.gateway.asyncapi

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# Throughput and latency against the limits of deskbridge's own parts, into docs/performance.md and
# docs/performance.png (about ten minutes). Not part of `make test`, which smoke-runs it with --quick.
.PHONY: bench faults
bench: $(INSTALLED) $(JARS) postgres-server
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench.run

# A bounded load while the broker, the gateway, ingest, audit and the database are killed and restarted,
# on one broker, on a 3-broker KRaft cluster and with two of each service (the active audit killed, its
# standby takes over), then schemathesis on both APIs; into docs/reliability.md (about ten minutes). `make test` runs the short scenarios (tests/faults/test_scenarios.py).
faults: $(INSTALLED) $(JARS) postgres-server
	$(BIN)/python -m faults.run
