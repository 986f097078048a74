#!/usr/bin/env bash
# The README's demo command: installs what is missing, starts the services, then runs `andon demo`
# (database, simulated line over OPC UA and MQTT, collectors, API and board) and prints the board URL.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
exec .venv/bin/andon demo "$@"
