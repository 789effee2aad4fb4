#!/usr/bin/env bash
# Make sure the machine's PostgreSQL and Redis are up; start them if they are down; fail loudly.
set -uo pipefail
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}

pg_up() { pg_isready -h "$PG_HOST" -p "$PG_PORT" -q; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "PostgreSQL is down; starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "Redis is down; starting it" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
pg_up || { echo "FATAL: PostgreSQL unreachable on $PG_HOST:$PG_PORT" >&2; exit 1; }
redis_up || { echo "FATAL: Redis unreachable on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
echo "services: PostgreSQL and Redis are up" >&2
