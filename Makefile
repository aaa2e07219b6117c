# Archipel: `make demo` sets everything up and runs the platform; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= var
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real peers the tests and benchmarks drive (Debian packages).
APT_PACKAGES := dcmtk orthanc orthanc-wsi orthanc-dicomweb dicom3tools libvips-tools openslide-tools libturbojpeg0 chromium nginx
# Only the benchmarks need these (bench/tiles.py: the load generator; nginx and Orthanc's WSI plugin are above).
BENCH_APT_PACKAGES := wrk

.PHONY: install system venv web demo serve test test-fast bench lint clean

install: system venv web

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

web:
	@if [ -f web/package.json ]; then cd web && npm ci --no-audit --no-fund && npm run build; fi

demo: install
	$(BIN)/archipel demo --data $(DATA)
	$(BIN)/archipel serve --data $(DATA)

serve: venv
	$(BIN)/archipel serve --data $(DATA)

test: system venv web
	$(BIN)/ruff check archipel tests bench
	$(BIN)/mypy archipel
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile

test-fast: venv
	$(BIN)/pytest -q -x -m "not e2e"

bench: system venv
	$(BIN)/pip install -q -e '.[test,bench]'
	@missing=""; for p in $(BENCH_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/linkage.py
	[ -x .venv-peers/bin/wsidicomizer ] || ($(PYTHON) -m venv .venv-peers && .venv-peers/bin/pip install -q wsidicomizer)
	$(BIN)/python bench/wsi.py
	$(BIN)/python bench/tiles.py

lint: venv
	$(BIN)/ruff check archipel tests bench
	$(BIN)/ruff format --check archipel tests bench
	$(BIN)/mypy archipel

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
