#!/usr/bin/env bash
# A streaming replica of the TimescaleDB primary for the API's reads: clone with pg_basebackup on the
# first start, then run as a hot standby. Plain PostgreSQL replication, nothing home-made.
set -euo pipefail
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "$PRIMARY_HOST" -p 5432 -U "$REPLICATION_USER"; do sleep 2; done
  rm -rf "${PGDATA:?}"/*
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -U "$REPLICATION_USER" -D "$PGDATA" \
    -X stream -R -C -S "${REPLICA_SLOT:-andon_replica_1}"
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c shared_preload_libraries=timescaledb
