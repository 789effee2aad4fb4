#!/usr/bin/env bash
# The whole suite against real PostgreSQL and Redis; each run migrates a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
scripts/services.sh
scripts/test-deps.sh
export TUNECOST_TEST_PG_ADMIN_URL=${TUNECOST_TEST_PG_ADMIN_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
export TUNECOST_TEST_REDIS_URL=${TUNECOST_TEST_REDIS_URL:-redis://127.0.0.1:6379}
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
