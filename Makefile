# Fresh machine (Python 3.11, nothing installed):
#   make demo   set up .venv and embed examples/demo.csv with the bundled model
#   make test   set up .venv and run the whole test suite
#
# TORCH_SPEC picks the torch build. The default takes the CPU build
# (torch==2.13.0, on local disk on our machines); elsewhere pass the spec for
# your hardware, e.g. make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skbert-installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

demo: setup
	@mkdir -p demo-output
	$(VENV)/bin/skbert embed examples/demo.csv --column text --output demo-output/demo.parquet
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m pip install --quiet --disable-pip-version-check ruff
	$(VENV)/bin/ruff format --check skbert tests benchmarks examples
	$(VENV)/bin/ruff check skbert tests benchmarks examples

bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(PY) benchmarks/bench_sentence.py --profile full

clean:
	rm -rf $(VENV) demo-output
