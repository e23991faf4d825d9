# One command each, on a fresh clone: `make demo`, `make test`, `make bench`.
# `make compat PSYCOPG_SRC=DIR [COMPAT_ARGS="--group cursor"]`: psycopg's own tests, raw and governed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench install clean compat

PSYCOPG_SRC ?=
COMPAT_ARGS ?=

$(BIN)/governed-db: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,integrations]'
	touch $(BIN)/governed-db

install: $(BIN)/governed-db

demo: install
	$(BIN)/governed-db demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run

# psycopg's suite also needs pproxy and anyio (the `compat` extra).
$(VENV)/.compat-deps: pyproject.toml $(BIN)/governed-db
	$(BIN)/pip install --quiet -e '.[compat]'
	touch $@

compat: install $(VENV)/.compat-deps
	$(BIN)/python tools/compat/run.py $(if $(PSYCOPG_SRC),--psycopg-src $(PSYCOPG_SRC)) $(COMPAT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
