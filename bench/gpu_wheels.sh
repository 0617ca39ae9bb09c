#!/usr/bin/env bash
# Where pip can reach an index: download the pure-Python wheels a GPU machine lacks (its image has torch,
# torchvision, lightning, tensorboard, scikit-learn, but no hydra-core, omegaconf, antlr4, torch-fidelity or
# cloudpickle) into .whl/ (git-ignored, a few MB), at the versions of constraints.txt, for that machine's Python.
#   bash bench/gpu_wheels.sh [PYTHON_VERSION=3.12]
# Carry .whl/ to the machine; bench/gpu_check.sh installs them from there without an index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
pin() { grep -i "^$1==" constraints.txt || { echo "constraints.txt has no pin for $1" >&2; exit 1; }; }
rm -rf .whl && mkdir -p .whl
for pkg in hydra-core omegaconf torch-fidelity cloudpickle; do  # (pytest is in the GPU image; gpu_check.sh checks)
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation py --abi none \
    --platform any -d .whl "$(pin "$pkg")"
done
# antlr4-python3-runtime 4.9.x (omegaconf's pin) is published as a source archive only: build its wheel here.
# It is pure Python, so the wheel (py3-none-any) serves any Python 3.
$PY -m pip wheel -q --no-deps -w .whl "$(pin antlr4-python3-runtime)"
ls -l .whl
du -sh .whl
