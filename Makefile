# Rampart: every developer and CI run the same targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install run test services lint typecheck contracts pytest bench bench-quick bench-scale bench-deps verify-deps clean \
	verify verify-security verify-fuzz verify-sqlmap verify-faults verify-soak

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/rampart: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/rampart  ## Create .venv and install Rampart with its dev tools

run: install  ## Serve the demo app on http://127.0.0.1:8000 (embedded PostgreSQL unless RAMPART_DATABASE_URL is set)
	$(BIN)/rampart serve --host 127.0.0.1 --port 8000

lint: install  ## ruff (lint and format check)
	$(BIN)/ruff check src tests bench verify
	$(BIN)/ruff format --check src tests bench verify

typecheck: install  ## mypy --strict on src/
	$(BIN)/mypy src

contracts: install  ## import-direction contract (lib -> db -> domains -> api)
	$(BIN)/lint-imports

# Citus (for the tests that start a cluster) is built from the release source by the shared script: once,
# as root; afterwards it returns at once. Without it those tests skip, saying why.
services:  ## Start or install what the test suite needs (PostgreSQL, Redis, Chromium, nginx, PgBouncer, Node, Citus)
	scripts/test-services

# The suite's HTTP scenarios again, against a private Citus cluster (a coordinator and 2 workers started by
# the tests): docs/guide/database-scaling.md, "Testing against a cluster".
CITUS_TESTS := tests/api/test_smoke.py tests/api/test_visibility.py tests/api/test_members.py \
	tests/api/test_validation.py tests/api/test_list_query.py tests/api/test_events_outbox.py \
	tests/events/test_log_api.py tests/events/test_stream.py tests/events/test_webhooks.py \
	tests/api/test_auth_sessions.py tests/api/test_rate_limit.py tests/ops/test_health_metrics.py

pytest: install  ## the test suite only (then its HTTP scenarios on a Citus cluster)
	$(BIN)/pytest -q
	$(BIN)/pytest -q --citus $(CITUS_TESTS)

test: services lint typecheck contracts pytest  ## Everything CI runs (on a fresh machine too: starts or installs what it needs)

$(VENV)/.bench-deps: pyproject.toml $(BIN)/rampart
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@

bench-deps: $(VENV)/.bench-deps  ## Install the bench extra (matplotlib for the charts)

$(VENV)/.verify-deps: pyproject.toml $(BIN)/rampart
	$(BIN)/pip install --quiet -e '.[verify]'
	@touch $@

verify-deps: $(VENV)/.verify-deps  ## Install the verify extra (sqlmap)

bench: install bench-deps  ## Benchmark against the Express reference (see bench/README.md)
	$(BIN)/python bench/compare.py

bench-quick: install bench-deps  ## A short comparison (1 round x 5 s, a couple of minutes): checks it works
	$(BIN)/python bench/compare.py --quick

bench-scale: install bench-deps  ## Scale curve: 1/2/4 workers x 10k/100k/1M tasks, both sides (~30 min; SCALE_ARGS=...)
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

# The standing verification suite (issue 7): evidence for SECURITY.md and RELIABILITY.md. A bounded
# subset of each part runs in `make test`; these targets run the long versions (about 2.5 hours in all on
# this 2-core machine: fuzz ~25 min, sqlmap ~80 min, faults ~5 min, soak 30 min).
verify: verify-security verify-fuzz verify-sqlmap verify-faults verify-soak  ## Long security and reliability runs (SECURITY.md, RELIABILITY.md)

verify-security: install  ## OWASP API Security Top 10 matrix (tests/security)
	$(BIN)/pytest -q tests/security

verify-fuzz: install  ## schemathesis, all phases and stateful, against a running instance
	$(BIN)/python verify/fuzz.py

verify-sqlmap: install verify-deps  ## sqlmap against every list/create/update parameter
	$(BIN)/python verify/sqlmap_scan.py

verify-faults: install  ## fault injection under load: PostgreSQL restart, Redis stop, SIGKILL, read-only database
	$(BIN)/python verify/faults.py

verify-soak: install bench-deps  ## 30 minutes of mixed load at half of peak (SOAK_ARGS=--minutes 5 for a shorter run)
	$(BIN)/python verify/soak.py $(SOAK_ARGS)

clean:  ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
