#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on loopback; install and start them if not.
# Idempotent: on a machine where both already run, it only checks.
set -euo pipefail

PG_PORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_TEST_PORT:-6379}
APT_UPDATED=0

log() { printf '[services] %s\n' "$*"; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    log "cannot install $* (no apt-get); install it yourself"; return 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # port, name
  for _ in $(seq 1 60); do listening "$1" && return 0; sleep 0.5; done
  log "$2 did not start on 127.0.0.1:$1"; return 1
}

ensure_postgres() {
  if listening "$PG_PORT"; then log "PostgreSQL is up on 127.0.0.1:$PG_PORT"; return; fi
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing PostgreSQL"; apt_install postgresql
  fi
  local version
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then log "no PostgreSQL cluster found"; return 1; fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for "$PG_PORT" PostgreSQL
  # A fresh Debian cluster wants a password over TCP: give postgres the one the tests use.
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
}

ensure_redis() {
  if listening "$REDIS_PORT"; then log "Redis is up on 127.0.0.1:$REDIS_PORT"; return; fi
  if ! command -v redis-server >/dev/null; then
    log "installing Redis"; apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for "$REDIS_PORT" Redis
}

ensure_postgres
ensure_redis
