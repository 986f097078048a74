#!/usr/bin/env bash
# Installs everything Andon needs on this machine, idempotently: local services (PostgreSQL with
# TimescaleDB, Mosquitto) and a virtual environment at .venv with Andon and its test tools.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ "$(id -u)" = 0 ]; then
  bash scripts/services.sh
else
  sudo -n bash scripts/services.sh
fi
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.andon-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
echo "bootstrap: ready (.venv)"
