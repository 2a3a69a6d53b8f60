# Two commands do all the set-up on a fresh clone:
#   make demo   # create .venv, install everything, run the demo (pretrain -> probe -> report)
#   make test   # install if needed, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=
# the suite in this many processes (pytest-xdist; each test process uses one torch thread): 2 fits a 2-core machine
TEST_WORKERS ?= 2

.PHONY: install demo test lint lock clean gpu-bench

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# requirements.lock pins every package (torch from the registry: its CUDA build runs on CPU
	# and matches torchvision, which tsai needs); the project itself goes in editable.
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m sslbench.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# On a GPU machine (< 8 min on an H200): bf16/fp32 step rates, peak memory, data wait; see benchmarks/results/gpu/.
gpu-bench: $(STAMP)
	$(PY) -m benchmarks.gpu --out benchmarks/results/gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check pretext volssl signalssl sslbench benchmarks tests
	$(VENV)/bin/mypy pretext

# Re-resolve the lock from pyproject (needs the registry): review the diff before committing.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q --upgrade pip
	.lockenv/bin/pip install -q -e '.[tsai,demo,audit,dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^medssl' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) runs .pytest_cache
