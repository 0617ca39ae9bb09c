#!/usr/bin/env bash
# One command on a GPU machine: the CUDA tests (marker gpu), then the training-throughput bench, within 7 minutes
# (hard caps: 30 s setup, 270 s tests, 120 s bench; a normal run takes about 4). It runs on the machine's own
# Python and torch, with no venv and no reinstall: where hydra-core, omegaconf, antlr4, torch-fidelity or
# cloudpickle are missing it unpacks the pure-Python wheels bench/gpu_wheels.sh put in .whl/ into a temporary
# folder (no pip, no index, no dependency resolution), and runs the project from this checkout (PYTHONPATH=src).
#   bash bench/gpu_check.sh                 # on the GPU machine (carry .whl/ there)
#   bash bench/gpu_check.sh --device cpu    # the dry run: the same steps on the CPU; the gpu tests skip, saying why
# Writes one results file, bench/results/gpu_check-<date>.txt ($GPU_CHECK_OUT to choose): the machine, each
# test's outcome (a skip with its reason), the bench's table with TFLOP/s, and a verdict line per part.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[ "${1:-}" = "--device" ] && DEVICE=${2:-cuda}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${GPU_CHECK_OUT:-bench/results/gpu_check-$(date +%Y%m%d-%H%M)-$DEVICE.txt}
TMP=$(mktemp -d)
mkdir -p "$(dirname "$OUT")"
{
  echo "# gpu_check $(date -u +%FT%TZ), device $DEVICE"
  # --- setup (cap 30 s): the project's pure-Python needs, from .whl/ where the machine lacks them
  export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}"
  NEEDED="import hydra, omegaconf, antlr4, torch_fidelity, cloudpickle, pytest"
  if ! $PY -c "$NEEDED" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
      for w in .whl/*.whl; do timeout 30 $PY -m zipfile -e "$w" "$TMP/site" || break; done  # pure Python: unpacked
      export PYTHONPATH="$TMP/site:$PYTHONPATH"
      echo "setup: unpacked $(ls .whl/*.whl | wc -l) wheels from .whl/ into $TMP/site"
    else
      echo "setup: missing packages and no .whl/: run bash bench/gpu_wheels.sh where pip works, and carry .whl/"
    fi
    $PY -c "$NEEDED" || echo "setup: STILL MISSING a package above: the tests below cannot run"
  else
    echo "setup: hydra-core, omegaconf, antlr4, torch-fidelity, cloudpickle and pytest importable; nothing unpacked"
  fi
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv 2>/dev/null || echo "nvidia-smi: not found"
  $PY -c "import sys, torch, lightning; print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda, '| lightning', lightning.__version__, '| CUDA devices', torch.cuda.device_count())"
  echo "## pytest -m gpu (cap 270 s)"
  # only the files that hold gpu tests: collecting the others would import what the machine lacks (nbformat, ...)
  timeout 270 $PY -m pytest tests/test_gpu.py tests/test_switches.py -m gpu -q -rA -p no:cacheprovider \
    --junitxml="$TMP/junit.xml"
  tests=$?
  REQUIRE=$( [ "$DEVICE" = cuda ] && echo --require-pass || true )
  REPORT=$($PY bench/gpu_report.py "$TMP/junit.xml" $REQUIRE) || { [ "$tests" -eq 0 ] && tests=5; }  # all skipped
  echo "$REPORT"
  echo "## bench/throughput.py on $DEVICE (cap 120 s)"
  if [ "$DEVICE" = cuda ]; then
    timeout 120 $PY bench/throughput.py --device cuda --sizes 64 --switches none,best,best+cudnn_benchmark --repeats 1 --warmup 10
  else
    timeout 120 $PY bench/throughput.py --device cpu --sizes 32 --switches none --steps 2 --warmup 1 --repeats 1 --min-window-s 0
  fi
  bench=$?
  echo "## verdict"
  if [ "$tests" -eq 0 ] && echo "$REPORT" | grep -q "NOTHING RAN"; then
    echo "tests: none ran (the dry run: every gpu test skipped, reasons above); that proves the setup, not the GPU paths"
  else
    echo "tests: $( [ $tests -eq 0 ] && echo passed || echo "FAILED (status $tests; 124: over its cap; 5: none ran on a GPU)" )"
  fi
  echo "bench: $( [ $bench -eq 0 ] && echo ran || echo "FAILED (exit status $bench; 124: over its cap)" )"
  [ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
} 2>&1 | tee "$OUT"
status=${PIPESTATUS[0]}
rm -rf "$TMP"
echo "saved $OUT"
exit "$status"
