# Sourced by the launch scripts (dist_launch.sh, slurm_train.sh) with DIR = the repository root:
# sets PY to the interpreter that runs the tools. PYTHON if set; else the active virtualenv's or
# conda env's python; else the environment tools/setup_env.sh made (VENV, default .venv) if it
# exists; else python.
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  PY=python
elif [ -x "${VENV:-$DIR/.venv}/bin/python" ]; then
  PY="${VENV:-$DIR/.venv}/bin/python"
else
  PY=python
fi
