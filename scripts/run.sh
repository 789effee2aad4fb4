#!/usr/bin/env bash
# Serve the API and one Celery worker on the embedded defaults (SQLite + SQLite broker).
# Ctrl-C (or SIGTERM) stops both; if either exits, the other is stopped too.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
HOST=${TUNECOST_HOST:-127.0.0.1}
PORT=${TUNECOST_PORT:-8000}
mkdir -p var/storage var/models

"$VENV/bin/tunecost" bootstrap

"$VENV/bin/celery" -A worker.celery_app worker --loglevel INFO &
worker_pid=$!
"$VENV/bin/uvicorn" app.main:create_app --factory --host "$HOST" --port "$PORT" \
  --timeout-graceful-shutdown 30 &
api_pid=$!

stop() {
  trap - EXIT INT TERM
  kill -TERM "$api_pid" "$worker_pid" 2>/dev/null || true
  wait "$api_pid" "$worker_pid" 2>/dev/null || true
}
trap stop EXIT INT TERM

echo "API on http://$HOST:$PORT (docs at /docs); worker pid $worker_pid. Ctrl-C stops both."
wait -n "$api_pid" "$worker_pid"
