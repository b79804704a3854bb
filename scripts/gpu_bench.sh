#!/usr/bin/env bash
# Benchmark the engine's GPU fast path on a CUDA machine, in three steps:
#   1. the Triton kernel tests on the GPU (pytest tests/kernels, the gpu-marked tests too);
#   2. the kernel micro-benchmarks (python -m bench.kernels: each kernel vs its reference);
#   3. eager vs CUDA graphs vs graphs + Triton kernels (python -m bench.gpu: time to first
#      audio, real-time factor, concurrent streams and their underruns).
#
# Usage:
#   scripts/gpu_bench.sh [--out DIR] [--no-tests] [-- BENCH_GPU_OPTIONS...]
#   scripts/gpu_bench.sh --dry-run
#
# Needs a checkout of the repository (bench/ and tests/ are not installed; the script runs
# from the checkout's root wherever it is called from) and the project installed in the
# Python environment with a CUDA build of PyTorch and Triton: `pip install -e ".[dev]"`, or
# `scripts/setup-venv`. It runs `python` from PATH, or $PYTHON if set.
#
#   --out DIR    also write everything printed to DIR/gpu_bench.log and copy the result
#                tables (bench/results/*.csv) into DIR
#   --no-tests   skip step 1
#   -- ...       options for python -m bench.gpu, e.g. -- --runs 50 --streams 8 32 100
#                --hifigan PATH (see python -m bench.gpu --help)
#   --dry-run    check the script without a GPU: the kernel tests in the Triton interpreter
#                and python -m bench.gpu --dry-run (CPU modes, tiny sizes, no CSV rows)
#   -h, --help   this help
#
# bench.kernels and bench.gpu append their rows to bench/results/kernels.csv and gpu.csv.
# Exit status: 0 all steps passed; 2 bad usage, no CUDA or a missing package (one line says
# which); 1 a step failed (the others still run).
set -uo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "gpu_bench: $*" >&2; exit 2; }

DRY=0; OUTDIR=""; TESTS=1; BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY=1 ;;
    --no-tests) TESTS=0 ;;
    --out) [ $# -ge 2 ] && [ -n "$2" ] || die "--out needs a folder (see --help)"
           OUTDIR=$2; shift ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    *) die "unknown argument '$1' (see --help; options for bench.gpu go after --)" ;;
  esac
  shift
done

PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 ||
  die "no '$PY' here: activate the project's environment or set PYTHON=/path/to/python"
# Absolute paths for the python and --out: the script moves to the checkout's root.
case $PY in /*) ;; */*) PY=$PWD/$PY ;; *) PY=$(command -v "$PY") ;; esac
case $OUTDIR in /*|"") ;; *) OUTDIR=$PWD/$OUTDIR ;; esac
cd "$(dirname "$0")/.." || die "cannot enter the repository root"
[ -f bench/gpu.py ] && [ -d tests/kernels ] || die "run it from a checkout of the repository"
"$PY" -c "import torch, engine, kernels, bench.gpu" 2>/dev/null ||
  die "$PY cannot import the project: install it (pip install -e '.[dev]' or scripts/setup-venv)"
if [ "$DRY" = 0 ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    die "no CUDA device visible to PyTorch ($PY); run this on a CUDA machine" \
        "(--dry-run checks the script on the CPU)"
fi
if [ "$TESTS" = 1 ]; then
  "$PY" -c "import pytest" 2>/dev/null ||
    die "the kernel tests need pytest: pip install -e '.[dev]' (or skip them: --no-tests)"
fi

log=/dev/null
if [ -n "$OUTDIR" ]; then
  mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
  log=$OUTDIR/gpu_bench.log
  : > "$log"
fi
failed=0
step() {  # step TITLE COMMAND...: run it, its output to the screen and the log
  echo "== $1" | tee -a "$log"
  shift
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then
    echo "gpu_bench: that step failed (exit $rc)" | tee -a "$log"
    failed=1
  fi
}

"$PY" - <<'PYEOF' 2>&1 | tee -a "$log"
import platform

import torch

try:
    import triton
    tv = triton.__version__
except Exception as e:  # noqa: BLE001
    tv = f"missing ({e})"
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA (dry run)"
print(f"python {platform.python_version()}, torch {torch.__version__}, triton {tv}, {dev}")
PYEOF

if [ "$DRY" = 0 ]; then
  [ "$TESTS" = 0 ] || step "kernel tests on the GPU" \
    "$PY" -m pytest -q -p no:cacheprovider tests/kernels
  step "kernel micro-benchmarks" "$PY" -m bench.kernels
  step "eager vs graphs vs graphs+kernels" "$PY" -m bench.gpu ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}
else
  [ "$TESTS" = 0 ] || step "kernel tests in the Triton interpreter (dry run)" \
    env TRITON_INTERPRET=1 "$PY" -m pytest -q -p no:cacheprovider -x tests/kernels
  step "eager vs static shapes, tiny sizes (dry run)" \
    "$PY" -m bench.gpu --dry-run ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}
fi
if [ -n "$OUTDIR" ]; then
  cp bench/results/*.csv "$OUTDIR"/ 2>/dev/null || true
  echo "output in $OUTDIR: gpu_bench.log and the result tables" >&2
fi
exit "$failed"
