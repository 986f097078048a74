#!/usr/bin/env bash
# First start of the primary: allow replication connections from the compose network.
set -e
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
