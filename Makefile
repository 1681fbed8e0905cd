# Crew Orchestrator. `make help` lists the targets; each installs what it needs on a fresh clone.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
# The locks are written by uv, at this version (`make lock`); pip installs from them.
UV_VERSION := 0.13.8
UV := $(BIN)/uv
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock"
# Playwright (the console's browser tests) drives Debian's Chromium; it never downloads one.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help install deps-update lock lock-check api-run op-console api-run-prod worker test api-test test-api \
	db-upgrade db-revision lint format coverage bench bench-read bench-orchestration bench-streams \
	bench-scale bench-smoke bench-console bench-growth console-screenshots openapi

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z -]*:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every dependency, indirect ones too, at the version and hashes of the locks; the project itself
# without dependencies, as they are all in the lock.
$(INSTALLED): pyproject.toml requirements.txt requirements-dev.txt | $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(INSTALLED) ## Create .venv and install the project with its dev tools, from the locks

deps-update: | $(VENV) ## Install new or changed dependencies after a pull, from the locks
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e . && touch $(INSTALLED)

$(UV): | $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(UV) ## After changing dependencies in pyproject.toml: rewrite requirements*.txt, keeping other pins
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.txt
	$(UV) pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o requirements-dev.txt

lock-check: $(UV) ## Fail when requirements*.txt are not what `make lock` writes from pyproject.toml
	@tmp=$$(mktemp -d) && trap 'rm -r "$$tmp"' EXIT && \
	cp requirements.txt requirements-dev.txt "$$tmp"/ && \
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -o "$$tmp/requirements.txt" && \
	$(UV) pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o "$$tmp/requirements-dev.txt" && \
	diff -u requirements.txt "$$tmp/requirements.txt" && \
	diff -u requirements-dev.txt "$$tmp/requirements-dev.txt" || \
	{ echo "requirements.txt or requirements-dev.txt is out of date with pyproject.toml: run make lock"; exit 1; }

.env:
	cp .env.example .env
	@echo "wrote .env from .env.example (API_KEY=test-key); edit it to configure the service"

db-upgrade: $(INSTALLED) .env ## Migrate the database to the latest schema
	$(BIN)/alembic upgrade head

db-revision: db-upgrade ## Autogenerate a migration: make db-revision msg="add a column"
	@test -n "$(msg)" || { echo 'usage: make db-revision msg="what changes"'; exit 2; }
	$(BIN)/alembic revision --autogenerate -m "$(msg)"

api-run: db-upgrade ## Serve the API on HOST:PORT (default 127.0.0.1:8000) with reload
	$(BIN)/crew-api --reload

op-console: db-upgrade ## Serve as the Operator Console: host, port (8008), log level from conf/operator.yaml
	$(BIN)/crew-api --op-console

api-run-prod: db-upgrade ## Serve with WEB_CONCURRENCY workers, no reload, JSON logs; needs a real API_KEY
	LOG_FORMAT=$${LOG_FORMAT:-json} $(BIN)/crew-api --prod

.PHONY: api-run-metrics
api-run-metrics: db-upgrade ## api-run with Prometheus metrics on /metrics (METRICS_ENABLED=1)
	METRICS_ENABLED=1 $(BIN)/crew-api --reload

worker: db-upgrade ## A standalone worker process (WORKER_IN_API=0 on the API; metrics on WORKER_METRICS_PORT)
	$(BIN)/crew-worker

test: $(INSTALLED) ## Run the whole test suite (PostgreSQL tests need TEST_POSTGRES_URL)
	$(BIN)/pytest $(PYTEST_ARGS)

api-test test-api: test ## Aliases of test

openapi: $(INSTALLED) ## Write docs/openapi.json, the document the app serves (a test checks it)
	$(BIN)/python -m apps.cli.openapi docs/openapi.json

coverage: $(INSTALLED) ## The whole suite, measuring what it runs of apps/ (processes it starts too)
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

lint: $(INSTALLED) ## ruff, mypy and the import contracts (pyproject.toml says what each checks)
	$(BIN)/ruff check apps crew_client tests bench alembic run_server.py test_api.py
	$(BIN)/ruff format --check apps crew_client tests bench alembic run_server.py test_api.py
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(INSTALLED) ## Format and fix what ruff can
	$(BIN)/ruff format apps crew_client tests bench alembic run_server.py test_api.py
	$(BIN)/ruff check --fix apps crew_client tests bench alembic run_server.py test_api.py

bench: $(INSTALLED) ## Every benchmark, on SQLite and PostgreSQL; each runs even when one before it missed a target
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 2; }
	@status=0; for name in read_api orchestration streams console growth; do \
		echo "== bench.$$name"; \
		$(BIN)/python -m bench.$$name --backend both || status=$$(( $$? > status ? $$? : status )); \
	done; \
	$(BIN)/python -m bench.scale || status=$$(( $$? > status ? $$? : status )); \
	exit $$status

bench-read: $(INSTALLED) ## Read API benchmark (needs wrk)
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 2; }
	$(BIN)/python -m bench.read_api --backend both

bench-orchestration: $(INSTALLED) ## Orchestration overhead per node and 50 runs through HTTP
	$(BIN)/python -m bench.orchestration --backend both

bench-streams: $(INSTALLED) ## 1,000 SSE subscribers on one 2,000-event run: delivery, latency, RSS
	$(BIN)/python -m bench.streams --backend both

bench-console: $(INSTALLED) ## The web console: pages on 100,000 runs, paint, DAG, event to DOM (Chromium)
	$(BIN)/python -m bench.console --backend both

bench-growth: $(INSTALLED) ## Each figure at 10x, 100x and 1,000x the runs, nodes and subscribers (needs wrk)
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 2; }
	$(BIN)/python -m bench.growth --backend both

console-screenshots: $(INSTALLED) ## Retake docs/screenshots/*.png with the console's browser tests
	CONSOLE_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/console -k "browser" $(PYTEST_ARGS)

bench-scale: $(INSTALLED) ## Node throughput with 1, 2, 4 workers, then bench-read, on PostgreSQL
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 2; }
	@status=0; $(BIN)/python -m bench.scale || status=$$?; \
	$(BIN)/python -m bench.read_api --backend postgresql || status=$$(( $$? > status ? $$? : status )); \
	exit $$status

BENCHMARKS := read_api orchestration streams scale middleware_overhead hostile_requests console growth

bench-smoke: $(INSTALLED) ## Every benchmark at tiny sizes (what CI runs): fails when one breaks
	@command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk"; exit 2; }
	@for name in $(BENCHMARKS); do \
		echo "== bench.$$name --smoke"; \
		$(BIN)/python -m bench.$$name --smoke || { echo "bench.$$name --smoke failed"; exit 1; }; \
	done
