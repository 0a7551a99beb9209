# README's two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-all
setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/run_demo.py

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"
