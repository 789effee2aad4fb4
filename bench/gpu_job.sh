#!/usr/bin/env bash
# One real LoRA job through the API and the Celery worker (embedded SQLite database and broker, as
# `make run`), then steady-state tokens/s of bench/gpu_validate.py; everything lands in OUT_DIR.
#   bench/gpu_job.sh OUT_DIR              # on a GPU machine (python3 with the project importable)
#   GPU_JOB_TINY=1 PY=.venv/bin/python bench/gpu_job.sh OUT_DIR   # CPU dry run, tiny model
# Env: STEPS (300), SEQ_LEN (1024), MICRO_BATCH (8), STEADY_BUDGET_S (seconds for part 2), PORT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=$(mkdir -p "${1:?usage: bench/gpu_job.sh OUT_DIR}" && cd "$1" && pwd)
PY=${PY:-python3}
RUN=${GPU_JOB_DIR:-/tmp/tunecost-gpu-job}
STEPS=${STEPS:-300} SEQ_LEN=${SEQ_LEN:-1024} MICRO_BATCH=${MICRO_BATCH:-8}
STEADY_BUDGET_S=${STEADY_BUDGET_S:-150}
PORT=${PORT:-8000}
export TUNECOST_URL="http://127.0.0.1:$PORT"
rm -rf "$RUN" && mkdir -p "$RUN/models" "$RUN/storage"
export TUNECOST_DATABASE_URL="sqlite:///$RUN/tunecost.db"
export TUNECOST_BROKER_URL="sqla+sqlite:///$RUN/broker.db"
export TUNECOST_STORAGE_ROOT="$RUN/storage" TUNECOST_MODEL_ROOTS="$RUN/models"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout first
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export C_FORCE_ROOT=1  # device machines run commands as root; the worker accepts JSON only
MODEL_DIR="$RUN/models/llama-3.2-1b-random" DATA="$RUN/train.jsonl"
SIZE=(--steps "$STEPS" --seq-len "$SEQ_LEN" --micro-batch "$MICRO_BATCH" --data "$DATA")
GPU=H200 TINY=()
if [ -n "${GPU_JOB_TINY:-}" ]; then GPU=cpu TINY=(--tiny); fi
LOG="$OUT_DIR/gpu_job-log.txt"
: >"$LOG"
t0=$(date +%s)
since() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$LOG"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv 2>&1 | tee -a "$LOG"
since "prepare"
"$PY" bench/gpu_job.py prepare --dest "$MODEL_DIR" "${SIZE[@]}" "${TINY[@]}" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || { since "prepare failed"; exit 1; }
"$PY" -m app.cli.main migrate >>"$LOG" 2>&1 || { since "migrate failed"; exit 1; }  # no admin key: submit makes its own
"$PY" -m celery -A worker.celery_app worker --loglevel INFO --concurrency 1 >"$RUN/worker.log" 2>&1 &
worker_pid=$!
"$PY" -m uvicorn app.main:create_app --factory --host 127.0.0.1 --port "$PORT" >"$RUN/api.log" 2>&1 &
api_pid=$!
stop() { kill -TERM "$api_pid" "$worker_pid" 2>/dev/null; wait "$api_pid" "$worker_pid" 2>/dev/null; }
trap stop EXIT
since "submit (worker $worker_pid, api $api_pid)"
"$PY" bench/gpu_job.py submit --model-dir "$MODEL_DIR" --gpu "$GPU" "${SIZE[@]}" \
  --out "$OUT_DIR/gpu_job.json" 2>&1 | tee -a "$LOG"
job_rc=${PIPESTATUS[0]}
stop
trap - EXIT
since "job done rc=$job_rc"
{ echo "--- worker.log"; tail -n 60 "$RUN/worker.log"; echo "--- api.log"; tail -n 20 "$RUN/api.log"; } >>"$LOG"

# Part 2: steady-state tokens/s against the time model (20 timed steps after one warm-up).
if [ -n "${GPU_JOB_TINY:-}" ]; then
  "$PY" bench/gpu_validate.py --cpu-smoke --steps 3 --methods lora --out "$OUT_DIR/gv-smoke.json" \
    2>&1 | tee -a "$LOG"
else
  left=$STEADY_BUDGET_S
  for spec in "meta-llama/Llama-3.2-1B full,lora,qlora 512,2048 20 1b" \
              "meta-llama/Meta-Llama-3-8B lora,qlora 2048 10 8b"; do
    read -r model methods seqs steps tag <<<"$spec"
    [ "$left" -gt 20 ] || { since "no time left for $tag"; break; }
    s0=$(date +%s)
    timeout "$left" "$PY" bench/gpu_validate.py --models "$model" --methods "$methods" \
      --seq-lens "$seqs" --steps "$steps" --out "$OUT_DIR/gv-steady-$tag.json" 2>&1 | tee -a "$LOG"
    left=$(( left - ($(date +%s) - s0) ))
    since "gpu_validate $tag done"
  done
fi
since "all done"
exit "$job_rc"
