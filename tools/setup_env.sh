#!/usr/bin/env bash
# Create (or complete) the virtual environment .venv with the verified OpenMMLab stack.
#
#   bash tools/setup_env.sh            # idempotent; seconds when everything is there
#
# Steps (each is skipped when what it installs already works in the venv):
#   1. venv         python3 -m venv $VENV
#   2. torch        torch==2.13.0 (CPU wheel on this machine kind)
#   3. build tools  setuptools<70 (mmcv's setup.py and mmengine's mmdet:: resolution need
#                   pkg_resources; torch declares setuptools>=77 but does not need it to run)
#   4. mmengine     mmengine==0.10.7
#   5. mmcv         mmcv==2.1.0 compiled from source with its CPU ops (~16 min on 2 cores, then cached by pip)
#   6. mm stack     mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex pywavelets + test tools
#                   (pytest, hypothesis, matplotlib, onnx==1.23.2 onnxruntime==1.32.0 for the
#                   export tests; torch's TorchScript exporter needs no onnxscript; triton==3.9.0,
#                   whose CPU interpreter runs the WTConv GPU kernels in the tests)
#   7. convzoo_mm   editable install of this repository, compiling its C++ CPU kernels
#
# Bring your own stack (e.g. CUDA builds of torch/mmcv): install them into the venv first
# (or point VENV at an existing environment); the matching steps see them and are skipped.
# Environment: VENV (default .venv), PYTHON (default python3), MAX_JOBS (default: nproc).
set -uo pipefail
case "${1:-}" in
    '') ;;
    -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) echo "usage: bash tools/setup_env.sh [--help]  (settings via VENV, PYTHON, MAX_JOBS)" >&2
       exit 2 ;;
esac
cd "$(dirname "$0")/.."
VENV=$(realpath -m -s "${VENV:-.venv}")   # absolute, symlinks kept (a venv's python is one)
PYTHON=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1
T0=$(date +%s)

say()  { printf '[setup %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { say "FAILED at step '$1'"; say "what to try: $2"; exit 1; }
vpy()  { "$VENV/bin/python" "$@"; }
# pip with its "Location is ignored" noise filtered out; returns pip's own exit status
pipi() {
  local log rc; log=$(mktemp)
  vpy -m pip install -q "$@" >"$log" 2>&1; rc=$?
  grep -v "^WARNING: Location" "$log"; rm -f "$log"; return $rc
}
# after torch, every install keeps setuptools<70: mmcv's setup.py and mmengine's `mmdet::` base
# resolution import pkg_resources, which newer setuptools (torch asks for >=77) no longer ships
PIN='setuptools<70'
ok()   { (cd / && "$VENV/bin/python" -c "$1") >/dev/null 2>&1; }   # not from the repo dir

# The package is installed editable from here, with its C++ kernels (convzoo_mm._C) built no
# older than their sources.
PKG_OK="import convzoo_mm, convzoo_mm._C, glob, os, sys
src = max(os.path.getmtime(f) for f in glob.glob('$PWD/convzoo_mm/ops/csrc/*'))
sys.exit(os.path.dirname(os.path.dirname(os.path.abspath(convzoo_mm.__file__))) != '$PWD'
         or src > os.path.getmtime(convzoo_mm._C.__file__))"
# Fast path: one interpreter start checks everything the steps below would install.
ALL_OK="import sys, os, setuptools, torch, mmengine, mmcv, mmdet, mmseg, mmseg.models, pywt, pytest
import hypothesis, onnx, onnxruntime, triton, ftfy, regex, convzoo_mm
from mmcv.ops import nms, roi_align
sys.exit(int(setuptools.__version__.split('.')[0]) >= 70 or mmcv.__version__ != '2.1.0'
         or mmengine.__version__ != '0.10.7' or mmdet.__version__ != '3.3.0'
         or mmseg.__version__ != '1.2.2')"
if [ -x "$VENV/bin/python" ] && ok "$ALL_OK" && ok "$PKG_OK"; then
  say "environment ready: $VENV (all 7 steps already done)"
  exit 0
fi

# 1. venv
if [ -x "$VENV/bin/python" ]; then say "1/7 venv: $VENV exists"
else
  say "1/7 venv: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV" || fail venv "install python3-venv, or set PYTHON=/path/to/python3.11"
fi

# 2. torch
if ok "import torch"; then say "2/7 torch: $(vpy -c 'import torch; print(torch.__version__)') present"
else
  say "2/7 torch: installing torch==2.13.0"
  pipi torch==2.13.0 || fail torch "pip install torch==2.13.0 into $VENV by hand (or your CUDA build), then rerun"
fi

# 3. build tools
if ok "import setuptools, wheel, pkg_resources, sys; sys.exit(int(setuptools.__version__.split('.')[0]) >= 70)"; then
  say "3/7 build tools: ok"
else
  say "3/7 build tools: installing setuptools<70, wheel"
  pipi --upgrade pip wheel "$PIN" || fail "build tools" "check network access to PyPI"
  say "    (pip's note that torch wants setuptools>=77 is expected: torch runs without it)"
fi

# 4. mmengine
if ok "import mmengine, sys; sys.exit(mmengine.__version__ != '0.10.7')"; then say "4/7 mmengine: ok"
else
  say "4/7 mmengine: installing mmengine==0.10.7"
  pipi mmengine==0.10.7 numpy opencv-python "$PIN" || fail mmengine "pip install mmengine==0.10.7"
fi

# 5. mmcv with compiled ops
if ok "import mmcv, sys; from mmcv.ops import nms, roi_align; sys.exit(mmcv.__version__ != '2.1.0')"; then
  say "5/7 mmcv: 2.1.0 with ops ok"
else
  say "5/7 mmcv: building mmcv==2.1.0 from source with CPU ops (MAX_JOBS=$MAX_JOBS)."
  say "    This takes ~16 min on 2 cores the first time; pip caches the wheel, later installs take seconds."
  log=$(mktemp /tmp/mmcv-build.XXXX.log)
  MMCV_WITH_OPS=1 vpy -m pip install -v --no-build-isolation mmcv==2.1.0 "$PIN" >"$log" 2>&1 &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    sleep 30
    n=$(grep -oE '^ *\[[0-9]+/[0-9]+\]' "$log" 2>/dev/null | tail -n 1 | tr -d ' ')
    say "    mmcv still building: compiled ${n:-[preparing]} (log: $log)"
  done
  wait $pid || { tail -n 30 "$log"; fail mmcv "see $log; needs gcc/g++ and python headers, setuptools<70, torch importable in $VENV"; }
  ok "from mmcv.ops import nms" || fail mmcv "mmcv installed without ops: reinstall with MMCV_WITH_OPS=1 --no-build-isolation --no-cache-dir"
  say "    mmcv built"
fi

# 6. mm stack and the libraries the package and tests use
if ok "import mmdet, mmseg, mmseg.models, pywt, pytest, hypothesis, onnx, onnxruntime, triton, ftfy, regex, sys; sys.exit(mmdet.__version__ != '3.3.0' or mmseg.__version__ != '1.2.2')"; then
  say "6/7 mmdet/mmseg/pywavelets/pytest: ok"
else
  say "6/7 mmdet/mmseg/pywavelets/pytest: installing"
  pipi mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex PyWavelets pytest hypothesis matplotlib \
    onnx==1.23.2 onnxruntime==1.32.0 triton==3.9.0 "$PIN" \
    || fail "mm stack" "pip install mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex PyWavelets pytest onnx onnxruntime triton"
fi

# 7. this package (editable) and its C++ kernels
if ok "$PKG_OK"; then
  say "7/7 convzoo_mm: editable install and C++ kernels ok"
else
  say "7/7 convzoo_mm: pip install -e . (compiles the C++ CPU kernels, about a minute)"
  pipi --no-build-isolation --no-deps -e . || fail convzoo_mm "pip install --no-deps -e . in $VENV"
fi
say "environment ready: $VENV ($(vpy -c 'import torch,mmcv,mmdet,mmseg;print("torch",torch.__version__,"mmcv",mmcv.__version__,"mmdet",mmdet.__version__,"mmseg",mmseg.__version__)' 2>/dev/null))"
