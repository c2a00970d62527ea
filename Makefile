# The commands the README shows. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.DEFAULT_GOAL := help
.PHONY: help run test fuzz lint browser bench-charge bench-feed clean-data clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

help:  ## list the targets
	@echo "make TARGET, where TARGET is one of:"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' \
	    $(MAKEFILE_LIST)

run: $(STAMP)  ## the whole system, embedded defaults unless DATABASE_URL/REDIS_URL are set
	$(BIN)/bazaar dev

lint: $(STAMP)  ## ruff, as `make test` runs it
	$(BIN)/ruff check .

test: $(STAMP) browser  ## lint + the test suite, against PostgreSQL and Redis on 127.0.0.1
	$(BIN)/ruff check .
	$(BIN)/pytest

fuzz: $(STAMP)  ## schemathesis on every operation, 300 generated cases per operation (a few minutes)
	FUZZ_EXAMPLES=300 $(BIN)/pytest tests/test_schemathesis.py

# Debian's Chromium for tests/test_browser_docs.py (Playwright drives it; it downloads no
# browser of its own). Installed only when missing, and only where apt-get can run.
browser:  ## headless Chromium for the browser test (apt-get install chromium, if missing)
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (apt-get) for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null) || echo "could not install chromium: the browser test will be skipped"; \
	else echo "no $(CHROMIUM), and apt-get needs root: the browser test will be skipped"; fi

# wrk drives the accept phases (installed when missing, where apt-get can run); without it
# bench/charge.py falls back to its Python client, which takes CPU from the server.
bench-charge: $(STAMP)  ## charges: door, drain, latency, next to a plain build and pgbench (~2 min)
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing wrk (apt-get) for the accept phases"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk \
	    >/dev/null) || echo "could not install wrk: the accept phases use the Python client"; \
	else echo "no wrk, and apt-get needs root: the accept phases use the Python client"; fi
	$(BIN)/python -m bench.charge

bench-feed: $(STAMP)  ## likes, comments and live alarms, next to a plain build (about 80 s)
	$(BIN)/python -m bench.feed

clean-data:  ## forget what `make run` stored (var/): the next start loads fresh demo data
	rm -rf var

clean:  ## remove .venv, var/ and the caches
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
