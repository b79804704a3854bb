#!/usr/bin/env bash
# One device call on a lent GPU machine (H100/H200): install what the image lacks, run the
# kernel tests on the GPU, then the eager / graphs / graphs+kernels comparison.
#
#   Here, once:   echo /.whl/ >> .git/info/exclude
#                 cp ../shared/wheels/py312-x86_64/*.whl .whl/   (see ../shared/wheels/README.md)
#   Device call:  run(command="bash scripts/gpu_bench.sh", carry=[".whl"])
#   Anywhere:     bash scripts/gpu_bench.sh --dry-run   (no GPU: skips the GPU parts, says so)
#
# Output (tests and tables) goes to stdout and, when $OUT is set, to $OUT/gpu_bench.log plus
# the CSV rows in $OUT/.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=""
[ "${1:-}" = "--dry-run" ] && dry="--dry-run"
log=${OUT:+$OUT/gpu_bench.log}
say() { echo "$@" | tee -a ${log:-/dev/null}; }

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${OUT:-}" ] && PY=.venv/bin/python
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  say "installing carried wheels into .site"
  $PY -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
has_cuda=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
$PY - <<'PYEOF' 2>&1 | tee -a ${log:-/dev/null}
import torch, platform
try:
    import triton; tv = triton.__version__
except Exception as e:
    tv = f"missing ({e})"
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print(f"python {platform.python_version()}, torch {torch.__version__}, triton {tv}, device {dev}")
PYEOF

if [ "$has_cuda" = "1" ]; then
  say "== kernel tests on the GPU (compiled Triton, plus the gpu-marked tests)"
  $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tee -a ${log:-/dev/null}
  say "== kernel micro-benchmarks"
  $PY -m bench.kernels 2>&1 | tee -a ${log:-/dev/null}
else
  say "== no CUDA here: GPU kernel tests and micro-benchmarks skipped (run on a lent GPU)"
  TRITON_INTERPRET=1 $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py -x 2>&1 | tail -3 | tee -a ${log:-/dev/null}
fi
say "== eager vs graphs vs graphs+kernels"
$PY -m bench.gpu $dry 2>&1 | tee -a ${log:-/dev/null}
if [ -n "${OUT:-}" ]; then cp bench/results/*.csv "$OUT"/ 2>/dev/null || true; fi
