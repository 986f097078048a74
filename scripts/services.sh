#!/usr/bin/env bash
# Installs (when missing) and starts the local services Andon needs: PostgreSQL with TimescaleDB and a
# Mosquitto broker on loopback. Idempotent: reuses whatever already runs. Used by `andon services up`,
# by the demo and by .ci/run, on a fresh Debian bookworm machine or a development machine alike.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DEBIAN_FRONTEND=noninteractive
log() { echo "services: $*"; }

updated=0
apt_install() {
  local need=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$updated" = 0 ]; then apt-get update -qq; updated=1; fi
  log "installing ${need[*]}"
  apt-get install -y -qq "${need[@]}" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  apt_install postgresql postgresql-contrib
fi
PG_MAJOR=$(ls /etc/postgresql | sort -n | tail -n 1)
export PG_MAJOR
pg_start() { pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start 2>/dev/null || true; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
psql_su() { if [ "$(id -u)" = 0 ]; then su postgres -c "psql -X -q -At -p 5432 $*"; else psql -X -q -At -h 127.0.0.1 -U postgres "$@"; fi; }

bash "$here/install-timescaledb.sh"

pg_ready || pg_start
for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
pg_ready || { log "PostgreSQL did not start"; exit 1; }

# Local development trusts loopback (as the development machines do); a production install uses
# passwords through ANDON_DATABASE_URL instead.
HBA="/etc/postgresql/$PG_MAJOR/main/pg_hba.conf"
if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$HBA"; then
  log "allowing loopback connections for local development in $HBA"
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$HBA"
  su postgres -c "psql -X -q -p 5432 -c 'select pg_reload_conf()'" >/dev/null
fi

preload=$(psql_su "-c 'show shared_preload_libraries'" || true)
if [[ "$preload" != *timescaledb* ]]; then
  new="timescaledb"
  [ -n "$preload" ] && new="$preload,timescaledb"
  log "adding timescaledb to shared_preload_libraries and restarting PostgreSQL"
  psql_su "-c \"alter system set shared_preload_libraries = '$new'\""
  pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main restart
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
pg_ready || { log "PostgreSQL is not accepting connections"; exit 1; }
log "PostgreSQL $PG_MAJOR with timescaledb on 127.0.0.1:5432"

# --- Mosquitto ----------------------------------------------------------------------------------------
command -v mosquitto >/dev/null 2>&1 || apt_install mosquitto mosquitto-clients
command -v mosquitto_pub >/dev/null 2>&1 || apt_install mosquitto-clients
CONF=/etc/mosquitto/mosquitto.conf
if ! grep -qE '^listener\s+1883' "$CONF" 2>/dev/null; then
  # Loopback only: the broker is for the local collector, simulator and tests.
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >> "$CONF"
fi
if ! grep -qE '^max_queued_messages' "$CONF" 2>/dev/null; then
  # Keep QoS 1 messages for a collector's persistent session while it restarts (the default keeps
  # only 1000 and drops the rest).
  printf 'max_queued_messages 1000000\nmax_queued_bytes 0\n' >> "$CONF"
  mq_restart=1
fi
mq_up() { timeout 3 mosquitto_sub -h 127.0.0.1 -p 1883 -t '$SYS/broker/version' -C 1 -W 2 >/dev/null 2>&1; }
if [ "${mq_restart:-0}" = 1 ] && pgrep -x mosquitto >/dev/null; then
  log "restarting Mosquitto to apply max_queued_messages"
  pkill -x mosquitto || true
  for _ in $(seq 1 20); do pgrep -x mosquitto >/dev/null || break; sleep 0.25; done
fi
if ! mq_up; then
  mkdir -p /run/mosquitto /var/lib/mosquitto /var/log/mosquitto
  chown mosquitto: /run/mosquitto /var/lib/mosquitto /var/log/mosquitto 2>/dev/null || true
  mosquitto -d -c "$CONF"
  for _ in $(seq 1 20); do mq_up && break; sleep 0.5; done
fi
mq_up || { log "Mosquitto did not start"; exit 1; }
log "Mosquitto on 127.0.0.1:1883"
