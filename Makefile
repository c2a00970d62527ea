# The commands the README shows. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-charge clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## the whole system, embedded defaults unless DATABASE_URL/REDIS_URL are set
	$(BIN)/bazaar dev

test: $(STAMP)  ## the test suite, against PostgreSQL and Redis on 127.0.0.1
	$(BIN)/ruff check .
	$(BIN)/pytest

bench-charge: $(STAMP)  ## load-generate POST /points/charge against a local stack
	$(BIN)/python -m bench.charge

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
