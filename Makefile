# Two commands set up a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR := /usr/share/datasets/fashion-mnist
# PyTorch only backs Optuna's GP sampler: its CPU build is enough and 10x smaller than the CUDA one.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN_ARGS ?= --arch mlp --trials 10 --subset 10000 --max-epochs 5
# The versions the suite last passed with: make install gets exactly these, so a fresh machine
# next month gets what was tested (setup.py keeps ranges for users who pip install fmsearch).
CONSTRAINTS := constraints.txt

.PHONY: install data browser run test lint docs bench clean constraints

install: $(VENV)/.installed

# Bytecode is compiled here, on both cores, rather than by each process: where
# PYTHONDONTWRITEBYTECODE is set (as on these CI machines) Python never caches what it
# compiles, and every process that imported Keras compiled TensorFlow's sources again (27.6 s
# of CPU for `import keras` against 9.4 s with the bytecode here, measured on 2 cores). Files
# that do not compile are written for another Python version and never imported on this one.
# PyTorch (only the GP sampler's) stays uncompiled: one test imports it.
$(VENV)/.installed: setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -c $(CONSTRAINTS) -e ".[test]"
	$(BIN)/python -m compileall -q -j 0 $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
		|| echo "some files did not compile (see above): Python compiles them if ever imported"
	$(BIN)/pip install --quiet --no-compile "torch==2.13.0+cpu" 2>/dev/null \
		|| $(BIN)/pip install --quiet --no-compile torch --index-url $(TORCH_CPU_INDEX)
	touch $@

# After the suite passed with newer packages (pip install --upgrade in .venv): pin those.
# tests/test_constraints.py fails while .venv and this file disagree.
constraints:
	( echo "# make constraints: the versions make test last passed with (pip freeze)."; \
	  $(BIN)/pip freeze --exclude-editable ) > $(CONSTRAINTS)

# Debian ships the original IDX files; elsewhere fmsearch falls back to the Keras cache or download.
data: install
	@if [ ! -f $(DATA_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist) \
		|| echo "apt could not install dataset-fashion-mnist: falling back to Keras"; \
	fi
	$(BIN)/fmsearch data

# The UI test drives a real headless Chromium: Debian's chromium and its chromedriver.
browser:
	@if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null; then \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver) \
		|| echo "apt could not install chromium-driver: the browser test will not run"; \
	fi

run: data
	$(BIN)/fmsearch run $(RUN_ARGS)

# Two workers or more (pytest-xdist): most tests wait on single-threaded Python, not on BLAS.
# One module per worker at a time keeps each module's shared fixtures built once; modules go
# out in collection order, which tests/conftest.py sorts slowest first (xdist's own reorder
# goes by test count, which sent the longest module out last).
PYTEST_ARGS ?= -n auto --dist loadfile --no-loadscope-reorder
# fmsearch's own bytecode too (a second or two), for the processes the tests start.
test: data browser
	$(BIN)/python -m compileall -q search runners spaces benchmarks tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The layering of search/, spaces/ and runners/ is written as import-linter contracts in
# pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# docs/cli.md from the click commands; tests/test_docs.py fails while it is stale.
docs: install
	$(BIN)/python -m search.cli.reference > docs/cli.md

# The long ones run by hand: python -m benchmarks.architectures (about 45 min) and
# python -m benchmarks.champion_run --hours 3 (3 hours, best alone on the machine).
bench: data
	$(BIN)/python -m benchmarks.tracking_overhead
	$(BIN)/python -m benchmarks.trial_memory
	$(BIN)/python -m benchmarks.short_search
	$(BIN)/python -m benchmarks.storage_load
	$(BIN)/python -m benchmarks.trial_speed
	$(BIN)/python -m benchmarks.scaling
	$(BIN)/python -m benchmarks.pruning_savings
	$(BIN)/python -m benchmarks.search_efficiency

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
