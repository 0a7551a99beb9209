# Sourced by the launch scripts (dist_launch.sh, slurm_train.sh) with DIR = the repository root:
# sets PY to the interpreter that runs the tools: CONVZOO_PYTHON if set; else the activated
# virtualenv's python; else the environment tools/setup_env.sh made (VENV, default .venv) if it
# exists; else the active conda env's python; else python. (setup_env.sh's PYTHON is the
# interpreter a new venv is made from, so it is not used here.)
if [ -n "${CONVZOO_PYTHON:-}" ]; then
  PY=$CONVZOO_PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [ -x "${VENV:-$DIR/.venv}/bin/python" ]; then
  PY="${VENV:-$DIR/.venv}/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
  PY="$CONDA_PREFIX/bin/python"
else
  PY=python
fi
