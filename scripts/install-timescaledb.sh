#!/usr/bin/env bash
# Builds and installs the Apache-licensed TimescaleDB extension for the local PostgreSQL from Debian's
# source package. Bookworm has no binary package; trixie's deb-src carries it and builds against
# postgresql-server-dev-<major>. trixie is only ever named as a deb-src line in a private sources list
# (with its own lists directory), never as a binary source: its binaries would replace the system's libc.
# Idempotent: does nothing when the extension is already available.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-$(pg_config --version 2>/dev/null | sed -E 's/^PostgreSQL ([0-9]+).*/\1/' || true)}"
if [ -z "${PG_MAJOR}" ]; then
  PG_MAJOR=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
fi
PG_LIB="/usr/lib/postgresql/${PG_MAJOR}/lib"
PG_SHARE="/usr/share/postgresql/${PG_MAJOR}/extension"

if ls "${PG_SHARE}"/timescaledb.control >/dev/null 2>&1 && ls "${PG_LIB}"/timescaledb*.so >/dev/null 2>&1; then
  echo "timescaledb: already installed for PostgreSQL ${PG_MAJOR}"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in "postgresql-server-dev-${PG_MAJOR}" dpkg-dev cmake gcc make libssl-dev libkrb5-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The mirror the machine already uses for bookworm, so no host is hard-coded here.
MIRROR=$(grep -h -m1 -E '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
if [ -z "${MIRROR}" ]; then
  MIRROR=$(grep -h -m1 -E '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}')
fi
[ -n "${MIRROR}" ] || { echo "timescaledb: cannot find the Debian mirror in /etc/apt" >&2; exit 1; }

WORK=$(mktemp -d /tmp/andon-timescaledb.XXXXXX)
trap 'rm -rf "${WORK}"' EXIT
mkdir -p "${WORK}/lists/partial" "${WORK}/archives/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${MIRROR} trixie main" > "${WORK}/trixie-src.list"
APT_OPTS=(-o "APT::Sandbox::User=root" -o "Dir::Etc::sourcelist=${WORK}/trixie-src.list" -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::Lists=${WORK}/lists" -o "Dir::Cache::Archives=${WORK}/archives"
          -o "APT::Get::List-Cleanup=0")
apt-get "${APT_OPTS[@]}" update -qq
cd "${WORK}"
apt-get "${APT_OPTS[@]}" source --download-only -qq timescaledb
dpkg-source -x --no-check timescaledb_*.dsc src >/dev/null
cd src
# Apache-2.0 edition only (APACHE_ONLY): the Timescale-licensed TSL module is not built.
./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DAPACHE_ONLY=1 -DWARNINGS_AS_ERRORS=OFF \
  -DPG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" -DCMAKE_BUILD_TYPE=Release >/dev/null
make -C build -j"$(nproc)" >/dev/null
make -C build install >/dev/null
echo "timescaledb: installed $(grep -m1 default_version "${PG_SHARE}/timescaledb.control") for PostgreSQL ${PG_MAJOR}"
