# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODE ?= serve

.PHONY: run test install install-dev lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# MODE=discord needs the `discord` extra (discord.py).
EXTRAS := $(if $(filter discord,$(MODE)),[discord])

install: $(BIN)/python
	$(BIN)/pip install --quiet '.$(EXTRAS)'

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

## Install and run the relay (HTTP mode; MODE=socket or MODE=discord for the others).
run: install
	@test -f .env || { cp .env.example .env; echo "Created .env from .env.example: fill in your Slack and Brixo settings, then run 'make run' again."; exit 2; }
	$(BIN)/python -m bot $(MODE)

## Install everything and run the whole test suite, lint and type checks included.
test: lint
	$(BIN)/python -m pytest -q -n 2

## Lint, format and type checks only.
lint: install-dev
	$(BIN)/ruff check bot tests benchmarks examples
	$(BIN)/ruff format --check bot tests benchmarks examples/*.py
	$(BIN)/mypy bot benchmarks

## Run the benchmark (see benchmarks/README.md).
bench: install-dev
	$(BIN)/python -m benchmarks.run
