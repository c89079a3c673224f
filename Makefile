# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv from pyproject.toml if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/exstream-push demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

# The inner loop: ruff and the unit tests (pure rules, parsers, the registry), no server, emulator or database.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not e2e"

bench: $(STAMP)
	$(BIN)/exstream-push bench --out bench-results/bench.json

# The README's Prefect UI screenshots, from a real `exstream-push up` in headless Chromium (installed with apt-get
# when missing and run as root); about three minutes.
screenshots: $(STAMP)
	$(BIN)/python -m exstream_push_dev.screenshots --out docs/screenshots

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .exstream-push .pytest_cache .ruff_cache
