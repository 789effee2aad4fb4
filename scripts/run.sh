#!/usr/bin/env bash
# Serve the API, one Celery worker for jobs and one for control tasks (webhook deliveries, the
# scheduled FOCUS delivery, with celery beat embedded) on the embedded defaults (SQLite + SQLite
# broker). Ctrl-C (or SIGTERM) stops them all; if one exits, the others are stopped too.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
HOST=${TUNECOST_HOST:-127.0.0.1}
PORT=${TUNECOST_PORT:-8000}
mkdir -p var/storage var/models

"$VENV/bin/tunecost" bootstrap

"$VENV/bin/celery" -A worker.celery_app worker --loglevel INFO &
worker_pid=$!
"$VENV/bin/celery" -A worker.celery_app worker -Q tunecost.control -c 2 -n control@%h \
  -B -s var/celerybeat-schedule --loglevel INFO &
control_pid=$!
"$VENV/bin/uvicorn" app.main:create_app --factory --host "$HOST" --port "$PORT" \
  --timeout-graceful-shutdown 30 --no-server-header &
api_pid=$!

stop() {
  trap - EXIT INT TERM
  kill -TERM "$api_pid" "$worker_pid" "$control_pid" 2>/dev/null || true
  wait "$api_pid" "$worker_pid" "$control_pid" 2>/dev/null || true
}
trap stop EXIT INT TERM

echo "API on http://$HOST:$PORT (docs at /docs); workers $worker_pid (jobs), $control_pid" \
  "(webhooks, FOCUS delivery, beat). Ctrl-C stops them all."
wait -n "$api_pid" "$worker_pid" "$control_pid"
