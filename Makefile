# ninjahook — every target sets up .venv on first use: run, serve and migrate with the
# runtime dependencies only, the development targets with the dev extra as well.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: help venv run serve migrate test check lint importlint format typecheck regenerate \
	check-generated wheel bench soak reliability clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(RUNTIME_STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME_STAMP)

$(DEV_STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(RUNTIME_STAMP) $(DEV_STAMP)

venv: $(DEV_STAMP)  ## Create .venv and install the project with its dev tools.

run: $(RUNTIME_STAMP)  ## Migrate and serve on http://127.0.0.1:8080 (one process, SQLite by default).
	$(BIN)/ninjahook serve

migrate: $(RUNTIME_STAMP)  ## Apply database migrations.
	$(BIN)/ninjahook migrate

serve: $(RUNTIME_STAMP)  ## Production: migrate, then gunicorn with uvicorn workers (gunicorn.conf.py).
	$(BIN)/ninjahook migrate
	$(BIN)/gunicorn -c gunicorn.conf.py

test: $(DEV_STAMP)  ## Run the test suite (SQLite; also PostgreSQL when NINJAHOOK_TEST_DATABASE_URL is set).
	$(BIN)/python -m pytest -q -m "not slow"

check: $(DEV_STAMP) lint typecheck importlint check-generated  ## ruff, mypy, import contracts and the generated-layer check.

lint: $(DEV_STAMP)  ## ruff format --check and ruff check.
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

importlint: $(DEV_STAMP)  ## Check the import contracts in .importlinter (import-linter).
	$(BIN)/lint-imports

format: $(DEV_STAMP)  ## Format and autofix.
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(DEV_STAMP)  ## mypy --strict on the files pyproject.toml lists.
	$(BIN)/mypy

regenerate: $(DEV_STAMP)  ## Rebuild app/spec/generated.py and handler stubs from webhook.yaml, then revalidate.
	$(BIN)/python -m app.spec.codegen

# app/spec/webhook.yaml is the wheel's copy of webhook.yaml (setup.py writes it into the
# build directory only; .gitignore lists it): one in the source tree must not differ.
check-generated: $(DEV_STAMP)  ## Fail when the generated layer is stale (or a stray app/spec/webhook.yaml differs).
	@if [ -e app/spec/webhook.yaml ] && ! cmp -s webhook.yaml app/spec/webhook.yaml; then \
	  echo "stale: app/spec/webhook.yaml differs from webhook.yaml; delete it (the build copies webhook.yaml into the wheel)" >&2; \
	  exit 1; fi
	$(BIN)/python -m app.spec.codegen --check

# build/lib is removed first: setuptools would otherwise package modules that no longer exist.
wheel: $(RUNTIME_STAMP)  ## Build the wheel into dist/ (see README, "Install from a wheel").
	rm -rf build/lib build/bdist.*
	$(BIN)/python -m pip wheel --no-deps -w dist .

bench: $(DEV_STAMP)  ## Benchmarks on loopback; writes BENCHMARKS.md (installs Debian's wrk when it can).
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
	  || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q wrk >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; } \
	  || echo "wrk could not be installed; the Python load generator drives the benchmark"
	$(BIN)/python -m bench

soak: $(DEV_STAMP)  ## Fault, load and shutdown tests; writes build/reliability/RELIABILITY.md.
	rm -f build/reliability/RELIABILITY.md
	$(BIN)/python -m pytest -q -m slow

reliability: soak  ## make soak, then copy its figures over the tracked RELIABILITY.md.
	cp build/reliability/RELIABILITY.md RELIABILITY.md

clean:  ## Remove .venv, instance/, build/, dist/ and the tool caches.
	rm -rf $(VENV) instance build dist .pytest_cache .mypy_cache .ruff_cache
