# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is installed pinned first so pip never resolves an unpinned (CUDA) build here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_PIN ?= torch==2.13.*
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=1

.PHONY: install dev demo test test-all bench lint clean sysdeps

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

# System packages the tests use: Tesseract OCR (burned-in text in `medgen deid`). Installed with
# apt-get when missing and allowed (root, e.g. CI); otherwise a note, and those tests skip.
sysdeps:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr; \
	  else echo "note: tesseract-ocr missing (sudo apt-get install tesseract-ocr)"; fi; }

demo: install
	$(VENV)/bin/medgen demo

test: dev sysdeps
	$(PY) -m pytest -q -m "not slow and not gpu" tests

test-all: dev sysdeps
	$(PY) -m pytest -q tests

bench: dev
	$(PIP) install -q -e ".[dev,bench]"
	$(PY) bench/manifest_bench.py

lint: dev
	$(VENV)/bin/ruff check medgen tests bench

clean:
	rm -rf $(VENV) demo_out .pytest_cache
