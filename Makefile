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

# The default TORCH_SPEC's CPU wheel (on local disk here) is for Python 3.11:
# for another Python, pip would download a multi-GB CUDA build.
ifeq ($(origin TORCH_SPEC),file)
check_311 = $(1) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	echo "make: $(1) is not Python 3.11, which the default TORCH_SPEC (the CPU" \
	  "build of torch==2.13.0 on local disk) is for; elsewhere pip would download a" \
	  "CUDA build. Pass PYTHON=python3.11 (after make clean if $(VENV) exists)," \
	  "or a TORCH_SPEC for your hardware." >&2; exit 1; }
else
check_311 = true
endif

# Installs when the stamp is missing, older than pyproject.toml or written for
# another TORCH_SPEC (it holds the spec), or when .venv cannot run pip; an
# up-to-date .venv is used as it is, whatever PYTHON says.
setup:
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || \
	    [ "$$(cat $(STAMP))" != '$(TORCH_SPEC)' ] || \
	    ! $(PY) -m pip --version >/dev/null 2>&1; then \
	  if [ ! -e $(VENV) ]; then \
	    $(call check_311,$(PYTHON)); \
	    echo "$(PYTHON) -m venv $(VENV)" && $(PYTHON) -m venv $(VENV) || exit 1; \
	  fi; \
	  $(PY) -m pip --version >/dev/null 2>&1 || \
	    $(PY) -m ensurepip >/dev/null 2>&1 || { \
	    echo "make: $(VENV) cannot run pip (its Python is gone, or it has no pip);" \
	      "remove it (make clean) and run make again." >&2; exit 1; }; \
	  $(call check_311,$(PY)); \
	  echo "installing $(TORCH_SPEC) and skbert[test] into $(VENV)" && \
	  $(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC) && \
	  $(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]" && \
	  printf '%s\n' '$(TORCH_SPEC)' > $(STAMP); \
	fi

demo: setup
	@mkdir -p demo-output
	$(VENV)/bin/skbert embed examples/demo.csv --column text --output demo-output/demo.parquet
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m pip install --quiet --disable-pip-version-check "ruff==0.17.6"
	$(VENV)/bin/ruff format --check skbert tests benchmarks examples
	$(VENV)/bin/ruff check skbert tests benchmarks examples

bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(PY) benchmarks/bench_sentence.py --profile full

clean:
	rm -rf $(VENV) demo-output
