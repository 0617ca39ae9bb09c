#!/usr/bin/env bash
# One command for a machine with GPUs: the CUDA-only tests (marker gpu), then the training-throughput bench
# (plain loop vs Lightning, each speed switch) on whatever GPUs are present. About 5-8 minutes.
#   bash bench/gpu_check.sh            # uses .venv/bin/python, or $PYTHON
# Writes bench/results/gpu_check-<date>.txt; nothing else on the machine is changed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=bench/results/gpu_check-$(date +%Y%m%d-%H%M).txt
mkdir -p bench/results
{
  echo "# gpu_check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not found"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
  echo "## pytest -m gpu"
  timeout 300 $PY -m pytest -m gpu -q -rs -p no:cacheprovider
  tests=$?
  echo "## bench/throughput.py (cuda)"
  timeout 240 $PY bench/throughput.py --device cuda --repeats 2 --warmup 10
  bench=$?
  echo "## exit: tests $tests, bench $bench"
  [ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
} 2>&1 | tee "$OUT"
status=${PIPESTATUS[0]}
echo "saved $OUT"
exit "$status"
