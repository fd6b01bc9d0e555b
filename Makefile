# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python ships only as source: build just the library, tuned for this CPU, two jobs (≈6 min on 2 cores);
# pip caches the wheel, so later installs on the same machine take seconds.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install run test test-slow lint bench lock clean browser

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/rag models install
	touch $(STAMP)

## Ingest the bundled corpus (a no-op when it is already in), then serve the UI and API on 127.0.0.1:7860.
run: install
	$(BIN)/rag ingest
	$(BIN)/rag serve

## Lint, type-check and the everyday test suite (minutes).
test: install browser lint
	$(BIN)/python -m pytest -m "not slow"

## Debian's chromium for the UI tests (Playwright drives it; never `playwright install`).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	  || { echo "make: cannot install chromium (needs root or sudo): apt-get install chromium" >&2; exit 1; }; }

## Long suites: benchmarks, SciFact, scale.
test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Speed benchmark of ingest and retrieval (medians), written to eval/results/.
bench: install
	$(BIN)/python eval/bench_speed.py

lock:
	(head -2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable; $(BIN)/python -m pip freeze --all | grep ^setuptools==) > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) data
