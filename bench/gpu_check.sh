#!/usr/bin/env bash
# The prepared GPU check: stock lm-eval HF vs evalkit FastLM on one CUDA GPU, no network (see bench/GPU_CHECK.md).
#
#   bench/gpu_check.sh --stage      # HERE, before the transfer: wheels (bench/gpu_wheels.sh) + data (bench/stage/)
#   bench/gpu_check.sh              # on the GPU machine: full check (10 MMLU subjects, 100 GSM8K), <= 8 min
#   bench/gpu_check.sh --dry-run    # same pipeline on CPU, tiny limits, random-init model, lm_eval from bench/wheels
#                                   # with datasets/evaluate/... blocked (what the GPU machine looks like); ~1 min
# Env: OUT (results folder; default bench/gpu-check), DEVICE (cuda|cpu; cpu implies the tiny limits),
#      GPU_CHECK_WEIGHTS (HF folder with the real SmolLM2-135M-Instruct weights: enables the correctness gate),
#      PYTHON (default .venv/bin/python if present, else python3), GPU_CHECK_TIMEOUT (seconds, default 470),
#      GPU_CHECK_ARGS (extra arguments for bench/gpu_check.py run, e.g. "--batch-size 64").
# Writes $OUT/gpu_check.json and $OUT/gpu_check.log; exit status 0 = ran (and, with real weights, passed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=${DEVICE:-cuda}
MODE=full
for a in "$@"; do
  case "$a" in
    --stage) MODE=stage ;;
    --dry-run) MODE=dry; DEVICE=cpu ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown argument $a (use --stage, --dry-run)" >&2; exit 2 ;;
  esac
done
[ "$DEVICE" = cpu ] && MODE=${MODE/full/dry}

if [ "$MODE" = stage ]; then
  bench/gpu_wheels.sh
  "$PY" bench/gpu_check.py stage ${DATA_DIR:+--data-dir "$DATA_DIR"}
  echo "carry size: $(du -sh --exclude=.venv --exclude=.git . | cut -f1) (checkout, .git/.venv excluded) — must stay < 64 MiB"
  exit 0
fi

OUT_DIR=${OUT:-bench/gpu-check}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
if [ "$MODE" = dry ]; then
  # 2 MMLU subjects x 2 questions, 4 GSM8K items x 16 tokens; simulate the bare GPU machine's python
  ARGS=(--device cpu --mmlu-subjects 2 --mmlu-limit 2 --gsm8k-limit 4 --max-gen-toks 16 --batch-size 8)
  if ls bench/wheels/*.whl >/dev/null 2>&1; then
    ARGS+=(--force-wheels --block datasets,evaluate,pyarrow,pandas,sklearn,sacrebleu,rouge_score,sqlitedict,pytablewriter)
  else
    echo "note: bench/wheels is empty (run bench/gpu_wheels.sh); the dry run uses the installed lm_eval" >&2
  fi
else
  ARGS=(--device "$DEVICE" --gsm8k-limit 100 --max-gen-toks 256 --batch-size 32)
fi
# shellcheck disable=SC2206
ARGS+=(--out-dir "$OUT_DIR" ${GPU_CHECK_ARGS:-})
{
  echo "== bench/gpu_check.sh $MODE on $(hostname) at $(date -Is); python: $PY ($("$PY" -V 2>&1))"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
} | tee "$LOG"
set +e
OMP_WAIT_POLICY=PASSIVE timeout "${GPU_CHECK_TIMEOUT:-470}" "$PY" bench/gpu_check.py run "${ARGS[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
set -e
echo "== exit $rc (124 = timed out); results in $OUT_DIR/gpu_check.json, log $LOG" | tee -a "$LOG"
exit "$rc"
