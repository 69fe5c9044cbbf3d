# pulsestream — developer entry points. Everything runs from a local .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(wildcard proto/pulsestream/v1/*.proto)

.DEFAULT_GOAL := help
.PHONY: help install dev run test lint typecheck proto crd readme bench soak clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,hiredis]'
	# The real Helm v4 library for tests/deploy (declares Python>=3.12, works on 3.11).
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python helm-sdkpy==0.1.32 cffi pycparser
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the services and their console scripts

dev: $(VENV)/.dev-installed ## Install the services plus test and lint tools

run: install ## Start generator (127.0.0.1:50051) and streamer (http://127.0.0.1:8080) until Ctrl-C
	$(BIN)/pulsestream-run

test: dev lint ## Install test tools, lint, and run the whole suite
	$(BIN)/pytest

lint: dev ## ruff, mypy --strict and import boundaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# tests/support too: every test folder and the benchmark start services and read SSE through it.
	$(BIN)/mypy pulsestream generator/pulsestream_generator streamer/pulsestream_streamer operator/pulsestream_operator tests/support
	$(BIN)/lint-imports

proto: dev ## Regenerate pulsestream/v1 from proto/ (commit the result)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

crd: dev ## Regenerate the StreamConfig CRD from the settings model (commit the result)
	$(BIN)/python -m pulsestream_operator.crd --write

readme: dev ## Regenerate the README's settings tables from the settings classes
	$(BIN)/python -m pulsestream.settingstable --write README.md

bench: dev ## Fan-out benchmark: pulsestream vs a tutorial-style reference bridge
	$(BIN)/python -m bench $(BENCH_ARGS)

soak: dev ## Longer load, leak and fault tests
	$(BIN)/pytest -m slow --timeout=1800 $(SOAK_ARGS)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
