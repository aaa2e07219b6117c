# Archipel: `make demo` sets everything up and runs the platform; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= var
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real peers the tests and benchmarks drive (Debian packages).
APT_PACKAGES := dcmtk orthanc orthanc-wsi orthanc-dicomweb dicom3tools libvips-tools openslide-tools libturbojpeg0 chromium nginx haproxy
# Only the benchmarks need these (bench/tiles.py: the load generator; nginx and Orthanc's WSI plugin are above).
BENCH_APT_PACKAGES := wrk

.PHONY: install system venv web demo serve test test-fast bench soak lint clean s3-server s3-server-stop

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

# The tests' S3-compatible server (decision 0038): moto's, in memory, on a free loopback port; its URL is passed
# to pytest in ARCHIPEL_TEST_S3_ENDPOINT (tests/s3_support.py). `make s3-server-stop` ends it.
S3_SERVER := var/s3-server
test: export ARCHIPEL_TEST_S3_ENDPOINT = $(shell cat $(S3_SERVER).url 2>/dev/null)
test: system venv web s3-server
	$(BIN)/ruff check archipel tests bench
	$(BIN)/mypy archipel
	$(MAKE) --no-print-directory deploy-check
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=40; status=$$?; $(MAKE) --no-print-directory s3-server-stop; exit $$status

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
	$(BIN)/python bench/scale.py

# Ten minutes of ingest and conversion on the scaled-out stack while workers restart (tests/test_soak.py); needs
# PostgreSQL and Redis. ARCHIPEL_SOAK_SECONDS=60 make soak for a short one.
soak: venv
	ARCHIPEL_SOAK_SECONDS=$${ARCHIPEL_SOAK_SECONDS:-600} $(BIN)/pytest -q -s -p no:cacheprovider -m soak tests/test_soak.py

s3-server: venv
	@mkdir -p var; \
	if [ -f $(S3_SERVER).pid ] && kill -0 "$$(cat $(S3_SERVER).pid)" 2>/dev/null \
	  && curl -s -o /dev/null "$$(cat $(S3_SERVER).url)"; then exit 0; fi; \
	port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	MOTO_RECORDER_FILEPATH=$(CURDIR)/$(S3_SERVER).recording nohup $(BIN)/moto_server -H 127.0.0.1 -p $$port \
	  </dev/null >$(S3_SERVER).log 2>&1 & echo $$! >$(S3_SERVER).pid; \
	echo "http://127.0.0.1:$$port" >$(S3_SERVER).url; \
	for i in $$(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$$port" && exit 0; sleep 0.1; done; \
	echo "moto_server did not answer on port $$port (see $(S3_SERVER).log)"; exit 1

s3-server-stop:
	@if [ -f $(S3_SERVER).pid ]; then kill "$$(cat $(S3_SERVER).pid)" 2>/dev/null || true; fi
	@rm -f $(S3_SERVER).pid $(S3_SERVER).url

lint: venv
	$(BIN)/ruff check archipel tests bench
	$(BIN)/ruff format --check archipel tests bench
	$(BIN)/mypy archipel
	$(MAKE) --no-print-directory deploy-check

# The deployment files, offline: the compose file against the compose-spec schema that check-jsonschema vendors,
# the manifests against the schemas of one Kubernetes version that kubernetes-validate bundles (both from the
# test extra, installed by `make venv`), and the load balancer's config with haproxy itself (`make system`).
# tests/test_deploy_files.py runs the same and checks our invariants.
KUBERNETES_VERSION := 1.31.0
.PHONY: deploy-check
deploy-check: venv
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(BIN)/kubernetes-validate --quiet --strict -k $(KUBERNETES_VERSION) deploy/kubernetes/*.yaml
	haproxy -q -c -f deploy/haproxy.cfg

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
