#!/usr/bin/env bash
# Train a FastPitch voice on a CUDA machine: build the teacher corpus if it is missing, train
# for N minutes, and leave the fp16 voice in the run folder.
#
# Usage:
#   scripts/gpu_train.sh --minutes N [--corpus DIR] [--out DIR] [--resume CKPT]
#                        [--preset NAME] [--batch-size N] [--lr LR] [--limit N] [--jobs N]
#   scripts/gpu_train.sh --dry-run [--corpus DIR] [--out DIR]
#
# Needs the project and its training extra installed in the Python environment, with a CUDA
# build of PyTorch: `pip install -e ".[train]"` in a checkout, or `scripts/setup-venv`. The
# script runs `python` from PATH, or $PYTHON if set (e.g. PYTHON=.venv/bin/python).
#
#   --minutes N     wall-clock training budget of this run, in minutes (required)
#   --corpus DIR    the teacher corpus (default: corpus). When DIR has no manifest.json it is
#                   built first (`fpstream corpus build --split train,val`, on all cores;
#                   resumable: run the script again after an interruption)
#   --out DIR       run folder (default: run): fastpitch_fp16.pt (the voice, fp16),
#                   checkpoint_last.pt (exact resume), train_log.jsonl, samples/, train.log
#   --resume CKPT   start from CKPT: a checkpoint_last.pt (exact), an fp16 voice such as
#                   engine/voices/default.pt (fresh optimizer) or a .shards.json index.
#                   Default: OUT/checkpoint_last.pt if it exists (run again to train on),
#                   else a new model
#   --preset NAME   model size of a new model: tiny, small or nvidia (default: small)
#   --batch-size N  (default: 128)        --lr LR  peak learning rate (default: 5e-3)
#   --limit N       corpus: at most N utterances per split (a quick trial)
#   --jobs N        corpus: worker processes (default: all cores)
#   --dry-run       rehearse the whole flow on the CPU, no CUDA needed: a 6-utterance corpus,
#                   the tiny model, 3 steps (default folders: a new temporary one)
#   -h, --help      this help
#
# bf16 autocast (--amp) is on; a GPU without bf16 (before Ampere) says so and trains in fp32.
# Exit status: 0 done; 2 bad usage, no CUDA or a missing package (one line says which);
# otherwise the status of the failed corpus or training step.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "gpu_train: $*" >&2; exit 2; }
say() { echo "gpu_train [$(date +%H:%M:%S)] $*" >&2; }

DRY=0; MINUTES=""; CORPUS=""; OUT=""; RESUME=""; PRESET=small; BATCH=128; LR=5e-3
LIMIT=""; JOBS=""
while [ $# -gt 0 ]; do
  opt=$1
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY=1; shift; continue ;;
    --minutes|--corpus|--out|--resume|--preset|--batch-size|--lr|--limit|--jobs)
      [ $# -ge 2 ] && [ -n "$2" ] || die "$opt needs a value (see --help)"
      val=$2; shift 2 ;;
    *) die "unknown argument '$opt' (see --help)" ;;
  esac
  case "$opt" in
    --minutes) MINUTES=$val ;;
    --corpus) CORPUS=$val ;;
    --out) OUT=$val ;;
    --resume) RESUME=$val ;;
    --preset) PRESET=$val ;;
    --batch-size) BATCH=$val ;;
    --lr) LR=$val ;;
    --limit) LIMIT=$val ;;
    --jobs) JOBS=$val ;;
  esac
done

is_number() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]] && [[ ! $1 =~ ^0+([.]0+)?$ ]]; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
if [ "$DRY" = 0 ]; then
  [ -n "$MINUTES" ] || die "--minutes N is required (see --help)"
  is_number "$MINUTES" || die "--minutes wants a positive number, not '$MINUTES'"
fi
is_count "$BATCH" || die "--batch-size wants a positive whole number, not '$BATCH'"
[ -z "$LIMIT" ] || is_count "$LIMIT" || die "--limit wants a positive whole number, not '$LIMIT'"
[ -z "$JOBS" ] || is_count "$JOBS" || die "--jobs wants a positive whole number, not '$JOBS'"
[ -z "$RESUME" ] || [ -f "$RESUME" ] || die "--resume: no such file: $RESUME"

PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 ||
  die "no '$PY' here: activate the project's environment or set PYTHON=/path/to/python"
"$PY" -c "import torch, engine.training.trainer, clients.cli" 2>/dev/null ||
  die "$PY cannot import the project: install it (pip install -e '.[train]' or scripts/setup-venv)"
if [ "$DRY" = 0 ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    die "no CUDA device visible to PyTorch ($PY); run this on a CUDA machine" \
        "(--dry-run rehearses it on the CPU)"
fi

if [ "$DRY" = 1 ]; then
  # The whole flow on the CPU, small enough for a test: tiny corpus and model, 3 steps.
  if [ -z "$CORPUS" ] || [ -z "$OUT" ]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_train-dry.XXXXXX")
    CORPUS=${CORPUS:-$tmp/corpus}; OUT=${OUT:-$tmp/run}
  fi
  PRESET=tiny; BATCH=4; LIMIT=${LIMIT:-6}; JOBS=${JOBS:-2}
  BUDGET=(--steps 3 --device cpu --threads 1 --warmup 2 --save-every 2 --val-every 1000
          --log-every 1)
else
  CORPUS=${CORPUS:-corpus}; OUT=${OUT:-run}
  BUDGET=(--minutes "$MINUTES" --amp --warmup 300 --save-every 200 --val-every 1000
          --log-every 50)
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, 'on',
           torch.cuda.get_device_name() if torch.cuda.is_available() else 'the CPU (dry run)')" >&2

# 1. The corpus, unless it is built already ---------------------------------------------
if [ -f "$CORPUS/manifest.json" ]; then
  say "corpus: $CORPUS is built"
else
  "$PY" -c "import hibari" 2>/dev/null ||
    die "building the corpus needs the teacher hibari-tts: pip install -e '.[train]'"
  say "corpus: building $CORPUS (resumable: run again to go on after an interruption)"
  quiet=""; [ -t 2 ] || quiet=--no-progress  # the progress bar only on a terminal
  "$PY" -m clients.cli -v corpus build --out "$CORPUS" --split train,val \
    ${LIMIT:+--limit "$LIMIT"} ${JOBS:+--jobs "$JOBS"} ${quiet:+"$quiet"}
fi

# 2. Training ----------------------------------------------------------------------------
if [ -z "$RESUME" ] && [ -f "$OUT/checkpoint_last.pt" ]; then RESUME=$OUT/checkpoint_last.pt; fi
start="a new $PRESET model"; [ -z "$RESUME" ] || start="resuming from $RESUME"
say "training: $start, batch $BATCH, lr $LR; log in $OUT/train.log"
"$PY" -m clients.cli -v train --corpus "$CORPUS" --out "$OUT" --preset "$PRESET" \
  --batch-size "$BATCH" --lr "$LR" "${BUDGET[@]}" ${RESUME:+--resume "$RESUME"} \
  2>&1 | tee -a "$OUT/train.log"

# 3. The voice -----------------------------------------------------------------------------
[ -f "$OUT/fastpitch_fp16.pt" ] || { echo "gpu_train: no voice in $OUT (see its train.log)" >&2
                                     exit 1; }
say "voice: $OUT/fastpitch_fp16.pt (fp16 with the aligner); to train on, run this again"
