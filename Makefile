# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python ships only as source: build just the library, tuned for this CPU, two jobs (≈6 min on 2 cores);
# pip caches the wheel, so later installs on the same machine take seconds. These VMs report AMX, but its tile
# instructions trap (SIGILL, "invalid opcode" in libggml-cpu): keep -march=native's AVX-512/VNNI (prefill is ~3x an
# AVX2 build's) and switch AMX off, which GCC honours whatever -march says.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON
ifeq ($(shell uname -m),x86_64)
export CFLAGS ?= -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CXXFLAGS ?= -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install run serve-shared test test-slow lint bench eval load lock clean browser latex

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

## Multi-process mode: a `chroma run` server on loopback that the UI/API and any `rag ingest` share.
## Ingest from another terminal with RAG_CHROMA__SERVER_URL=http://127.0.0.1:$(CHROMA_PORT) .venv/bin/rag ingest FILE.
CHROMA_PORT ?= 8000
serve-shared: install
	@mkdir -p data
	$(BIN)/chroma run --path data/chroma-server --host 127.0.0.1 --port $(CHROMA_PORT) >data/chroma-server.log 2>&1 & \
	chroma=$$!; trap 'kill $$chroma' EXIT; \
	export RAG_CHROMA__SERVER_URL=http://127.0.0.1:$(CHROMA_PORT); \
	RAG_CHROMA__CONNECT_TIMEOUT_S=60 $(BIN)/rag ingest && $(BIN)/rag serve

## Lint, type-check and the everyday test suite (minutes).
test: install browser latex lint
	$(BIN)/python -m pytest -m "not slow"

## Debian's chromium for the UI tests (Playwright drives it; never `playwright install`).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	  || { echo "make: cannot install chromium (needs root or sudo): apt-get install chromium" >&2; exit 1; }; }

## Debian's pdflatex for the PDF tests (they typeset real papers).
latex:
	@command -v pdflatex >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq texlive-latex-base \
	    texlive-latex-recommended >/dev/null \
	  || { echo "make: cannot install pdflatex (needs root or sudo): apt-get install texlive-latex-base" >&2; exit 1; }; }

## Long suites: benchmarks, SciFact, scale.
test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## A named eval suite (SUITE=dev|scifact|pubmedqa) into eval/reports/SUITE: report.md, results.json, plots.
SUITE ?= dev
eval: install
	$(BIN)/rag eval run $(SUITE)

## 20 concurrent chat sessions for 2 minutes against a fresh `rag serve` (loopback), into eval/results/load.md.
load: install
	$(BIN)/python eval/load_test.py --sessions 20 --duration 120

## Speed benchmarks (medians), written to eval/results/: answer latency through the API per question kind against the
## bare model's time for a prompt of the same length (about 10 min), ingest and search (rerank, hybrid, dense, BM25) at
## 231 and 5,183 abstracts, then the scale run to 100,000 abstracts on a Chroma server with the serving process's peak
## memory (the scale run publishes token vectors at every size: expect well over the ~20 min it took without them).
bench: install
	$(BIN)/rag ingest
	$(BIN)/python eval/bench_answer.py
	$(BIN)/python eval/bench_speed.py $(if $(wildcard ../shared/benchmarks/scifact),--scifact ../shared/benchmarks/scifact)
	$(BIN)/python eval/bench_scale.py
	$(BIN)/python eval/bench_full_text.py

lock:
	(head -2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable; $(BIN)/python -m pip freeze --all | grep ^setuptools==) > requirements.lock.new && mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) data
