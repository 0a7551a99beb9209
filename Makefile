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

# wheels for .ci/gpu on a GPU machine without network (python GPU_PY); carry .whl/ there
GPU_PY ?= 3.12
GPU_WHEELS := numpy pyyaml addict termcolor platformdirs yapf rich markdown-it-py mdurl pygments \
	mmengine==0.10.7 pywavelets matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing \
	python-dateutil six packaging pytest iniconfig pluggy
.PHONY: gpu-wheels
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --implementation cp \
		--python-version $(GPU_PY) --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
		-d .whl $(GPU_WHEELS)
	@ls .whl | wc -l | xargs echo "wheels in .whl/:"; du -sh .whl
