# ninjahook — every target sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv run serve migrate test check lint format typecheck regenerate check-generated bench soak clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## Create .venv and install the project with its dev tools.

run: $(STAMP)  ## Migrate and serve on http://127.0.0.1:8080 (one process, SQLite by default).
	$(BIN)/ninjahook serve

migrate: $(STAMP)  ## Apply database migrations.
	$(BIN)/ninjahook migrate

serve: $(STAMP)  ## Production: migrate, then gunicorn with uvicorn workers (gunicorn.conf.py).
	$(BIN)/ninjahook migrate
	$(BIN)/gunicorn -c gunicorn.conf.py

test: $(STAMP)  ## Run the test suite (SQLite; also PostgreSQL when NINJAHOOK_TEST_DATABASE_URL is set).
	$(BIN)/python -m pytest -q -m "not slow"

check: $(STAMP) lint typecheck check-generated  ## ruff, mypy and the generated-layer check.

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)  ## Format and autofix.
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

regenerate: $(STAMP)  ## Rebuild app/spec/generated.py and handler stubs from webhook.yaml, then revalidate.
	$(BIN)/python -m app.spec.codegen

check-generated: $(STAMP)  ## Fail when the generated layer is stale.
	$(BIN)/python -m app.spec.codegen --check

bench: $(STAMP)  ## Benchmarks on loopback; writes BENCHMARKS.md (installs Debian's wrk when it can).
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
	  || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q wrk >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; } \
	  || echo "wrk could not be installed; the Python load generator drives the benchmark"
	$(BIN)/python -m bench

soak: $(STAMP)  ## Fault, load and shutdown tests; writes RELIABILITY.md.
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
