# Quick start: `make train` (trains on the built-in data) and `make test` (runs the test suite).
# Both create .venv with everything needed on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The suite on one worker a core (pytest-xdist, at most 8; tests/conftest.py gives each its share of the cores):
# 3:37 against 6:36 in one process on 2 cores. `make test WORKERS=0`: one process, e.g. to debug.
WORKERS ?= auto
XDIST := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --maxprocesses=8)

.PHONY: install train test test-all lint format clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "facenet-pl needs Python >= 3.10, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m facenet_pl.utils.install_check  # torch and torchvision from one index, the extras import: else one line
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

# exec: pytest replaces the shell, so make is its parent and the suite ends when make is killed (tests/conftest.py)
test: $(STAMP)
	FACENET_PL_TESTS_DIE_WITH_PARENT=1 exec $(PY) -m pytest -m "not slow" $(XDIST) $(ARGS)

test-all: $(STAMP)
	FACENET_PL_TESTS_DIE_WITH_PARENT=1 exec $(PY) -m pytest $(XDIST) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check facenet_pl tests train.py eval.py benchmarks
	$(PY) -m ruff format --check facenet_pl tests train.py eval.py benchmarks

format: $(STAMP)
	$(PY) -m ruff format facenet_pl tests train.py eval.py benchmarks
	$(PY) -m ruff check --fix facenet_pl tests train.py eval.py benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
