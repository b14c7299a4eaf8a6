# The commands people and CI both use. `make run` and `make test` set everything up themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The private services' ports, and URLs that follow them unless set in the environment.
export MM_DEV_PG_PORT ?= 55432
export MM_DEV_REDIS_PORT ?= 56379
export MM_DATABASE_URL ?= postgresql+asyncpg://mergemeet@127.0.0.1:$(MM_DEV_PG_PORT)/mergemeet
export MM_REDIS_URL ?= redis://127.0.0.1:$(MM_DEV_REDIS_PORT)/0
# The local Redis Cluster's first port (6 nodes from here; `make test` starts it).
export MM_DEV_CLUSTER_PORT ?= 27001
API_URL = http://$${MM_API_HOST:-127.0.0.1}:$${MM_API_PORT:-8000}
WS_URL = ws://$${MM_REALTIME_HOST:-127.0.0.1}:$${MM_REALTIME_PORT:-8765}

.PHONY: install services cluster migrate seed run test test-cluster test-unit lint format types stop bench loadtest browser

$(STAMP): pyproject.toml
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; \
	  else echo "python3-venv is missing: sudo apt-get install -y python3-venv"; exit 1; fi; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,load]"
	@touch $(STAMP)

install: $(STAMP)

services:
	@$(PY) -m common.devservices start

migrate: install services
	$(BIN)/alembic upgrade head

seed: migrate
	$(BIN)/python -m api.seed

run: seed
	@echo ""
	@echo "  API       $(API_URL)        (OpenAPI: $(API_URL)/docs)"
	@echo "  Demo chat $(API_URL)/demo   (sign in as alice@… in one tab, bob@… in another)"
	@echo "  Ops page  $(API_URL)/ops    (admin accounts only)"
	@echo "  Realtime  $(WS_URL)         (health: http://127.0.0.1:$${MM_REALTIME_PORT:-8765}/healthz)"
	@echo "  Stop with Ctrl-C, then 'make stop' to stop PostgreSQL and Redis."
	@echo ""
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start api realtime

# The browser tests drive Debian's Chromium through the Python playwright package (dev extra);
# nothing downloads a browser (never `playwright install`).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing for tests/browser: sudo apt-get install -y chromium"; fi; }

# Everything on one Redis, then the `cluster` marker set again on the local Redis Cluster
# (tests/cluster/conftest.py says which tests; its own database, so the two runs never mix).
test: install services browser
	$(BIN)/pytest
	@$(MAKE) --no-print-directory test-cluster

cluster:
	@$(PY) -m common.devservices start-cluster

test-cluster: install services cluster
	MM_REDIS_URL="$$($(PY) -m common.devservices cluster-url)" \
	  MM_TEST_DATABASE="$${MM_TEST_DATABASE:-mergemeet_test}_cluster" $(BIN)/pytest -m cluster

# The tests that need no service (tests/conftest.py marks the others `integration`): no
# PostgreSQL, Redis, browser or server process is started or needed. Run it between edits.
test-unit: install
	$(BIN)/pytest -m "not integration"

types: install
	$(BIN)/mypy .

lint: types
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -c pyproject.toml -r api common realtime loadtest -q

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

stop:
	@$(PY) -m common.devservices stop

# Every figure of docs/BENCHMARKS.md (median of 3 runs, baseline in the same run): servers pinned
# to core 1 by the tool, the load generator (this command) to core 0. BENCH_ARGS e.g. "--runs 5".
bench: install services
	$$(command -v taskset >/dev/null && echo taskset -c 0) $(BIN)/python -m loadtest.bench $(BENCH_ARGS)

# locust scenarios, headless and bounded, against a running stack (`make run` in another shell).
LOCUST_USERS ?= 40
LOCUST_TIME ?= 60s
loadtest: install
	MM_LOADTEST_WS=$(WS_URL) $(BIN)/locust -f loadtest/locustfile.py --headless \
	  -u $(LOCUST_USERS) -r 10 -t $(LOCUST_TIME) --stop-timeout 10 --host $(API_URL) \
	  --only-summary --csv .data/locust/run
