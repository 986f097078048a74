"""Connections, the TimescaleDB check and versioned SQL migrations.

Migrations are files ``NNNN_name.sql`` beside this module, applied in order, each in one transaction,
recorded in ``schema_migrations`` with a checksum. A file whose first lines hold ``-- andon:license=timescale``
is applied only where the server has the Timescale-licensed features (continuous aggregates, compression,
retention); on the Apache edition it is recorded as skipped and applied by a later upgrade once the
features are there. ``-- andon:no-transaction`` runs a file statement by statement in autocommit (needed
for continuous aggregates).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

MIGRATION_LOCK_ID = 0x414E444F4E  # "ANDON": serialises concurrent upgrades


class DatabaseError(RuntimeError):
    """A database problem with a message that says what to do about it."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str
    license: str | None  # "timescale" when it needs the Timescale-licensed features
    transactional: bool

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    out = []
    for entry in resources.files("andon.storage.migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if not m:
            continue
        text = entry.read_text(encoding="utf-8")
        head = "\n".join(text.splitlines()[:5])
        lic = re.search(r"--\s*andon:license=(\w+)", head)
        out.append(
            Migration(
                version=int(m.group(1)),
                name=m.group(2),
                text=text,
                license=lic.group(1) if lic else None,
                transactional="andon:no-transaction" not in head,
            )
        )
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migrations share a version number: {versions}")
    return out


def connect(url: str, **kwargs: Any) -> psycopg.Connection:
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to the database at {_safe_url(url)}: {str(exc).strip()}\n"
            "Start the local services with `andon services up`, or set ANDON_DATABASE_URL."
        ) from exc


def _safe_url(url: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable url>"
    params.pop("password", None)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist. Returns True if it was created."""
    params = conninfo_to_dict(url)
    dbname = params.get("dbname") or "postgres"
    admin = make_conninfo(url, dbname="postgres")
    with connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
        return True


def timescale_status(conn: psycopg.Connection) -> dict[str, Any]:
    """What the server offers: extension available/installed/preloaded and the license edition."""
    avail = conn.execute(
        "select default_version, installed_version from pg_available_extensions where name = 'timescaledb'"
    ).fetchone()
    preload = conn.execute("select current_setting('shared_preload_libraries')").fetchone()[0]
    lic = conn.execute("select current_setting('timescaledb.license', true)").fetchone()[0]
    return {
        "available": avail is not None,
        "default_version": avail[0] if avail else None,
        "installed_version": avail[1] if avail else None,
        "preloaded": "timescaledb" in (preload or ""),
        "license": lic or None,
    }


def require_timescale(conn: psycopg.Connection) -> dict[str, Any]:
    st = timescale_status(conn)
    if not st["available"]:
        raise DatabaseError(
            "This PostgreSQL server has no TimescaleDB extension. Andon stores its events in TimescaleDB "
            "hypertables. Install it: on Debian run `andon services up` (it builds the Apache-licensed "
            "edition from Debian's timescaledb source package against postgresql-server-dev-15), or install "
            "Timescale's timescaledb-2-postgresql-<major> package, or use the timescale/timescaledb image."
        )
    if not st["preloaded"]:
        raise DatabaseError(
            "TimescaleDB is installed but not loaded: add timescaledb to shared_preload_libraries in "
            "postgresql.conf (or run `alter system set shared_preload_libraries = 'timescaledb'`) and restart "
            "PostgreSQL; `andon services up` does this for the local server."
        )
    return st


def licensed_features(conn: psycopg.Connection) -> bool:
    """True where continuous aggregates, compression and retention policies are available."""
    return timescale_status(conn)["license"] == "timescale"


def _ensure_migration_table(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        create table if not exists schema_migrations (
            version     integer primary key,
            name        text not null,
            checksum    text not null,
            status      text not null default 'applied',
            applied_at  timestamptz not null default now()
        )
        """
    )


def applied_migrations(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    exists = conn.execute("select to_regclass('schema_migrations')").fetchone()[0]
    if exists is None:
        return {}
    rows = conn.execute("select version, checksum, status from schema_migrations").fetchall()
    return {v: (c, s) for v, c, s in rows}


def upgrade(url: str, create_db: bool = True) -> list[str]:
    """Apply pending migrations; returns what was done, one line each. Safe to run again."""
    if create_db:
        ensure_database(url)
    done: list[str] = []
    with connect(url, autocommit=True) as conn:
        require_timescale(conn)
        conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            _ensure_migration_table(conn)
            licensed = licensed_features(conn)
            applied = applied_migrations(conn)
            for mig in load_migrations():
                prev = applied.get(mig.version)
                if prev is not None:
                    checksum, status = prev
                    if status == "applied" and checksum != mig.checksum:
                        raise DatabaseError(
                            f"migration {mig.version:04d}_{mig.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    if status == "applied" or (status == "skipped" and not licensed):
                        continue
                if mig.license == "timescale" and not licensed:
                    conn.execute(
                        "insert into schema_migrations (version, name, checksum, status) values (%s, %s, %s, "
                        "'skipped') on conflict (version) do nothing",
                        (mig.version, mig.name, mig.checksum),
                    )
                    done.append(f"skipped {mig.version:04d}_{mig.name} (needs Timescale-licensed features)")
                    continue
                _apply(conn, mig)
                done.append(f"applied {mig.version:04d}_{mig.name}")
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return done


def _split_statements(text: str) -> list[str]:
    # Only for no-transaction files, which hold simple statements (no dollar-quoted bodies).
    out = []
    for chunk in text.split(";"):
        body = "\n".join(ln for ln in chunk.splitlines() if not ln.strip().startswith("--")).strip()
        if body:
            out.append(body)
    return out


def _apply(conn: psycopg.Connection, mig: Migration) -> None:
    record = (
        "insert into schema_migrations (version, name, checksum, status) values (%s, %s, %s, 'applied') "
        "on conflict (version) do update set checksum = excluded.checksum, status = 'applied', applied_at = now()"
    )
    try:
        if mig.transactional:
            with conn.transaction():
                conn.execute(mig.text)  # type: ignore[arg-type]
                conn.execute(record, (mig.version, mig.name, mig.checksum))
        else:
            for stmt in _split_statements(mig.text):
                conn.execute(stmt)  # type: ignore[arg-type]
            conn.execute(record, (mig.version, mig.name, mig.checksum))
    except psycopg.Error as exc:
        raise DatabaseError(f"migration {mig.version:04d}_{mig.name} failed: {str(exc).strip()}") from exc


def check_schema(conn: psycopg.Connection) -> None:
    """At start-up: stop with a clear message if the schema is behind the code."""
    require_timescale(conn)
    applied = applied_migrations(conn)
    pending = [
        f"{m.version:04d}_{m.name}"
        for m in load_migrations()
        if m.version not in applied or (applied[m.version][1] != "applied" and m.license is None)
    ]
    if pending:
        raise DatabaseError(f"the database schema is not up to date (pending: {', '.join(pending)}); "
                            "run `andon db upgrade`")


def ping(conn: psycopg.Connection) -> None:
    """Raises unless the database answers and has Andon's schema (readiness probes)."""
    conn.execute("select 1 from schema_migrations limit 1")


def make_pool(url: str, min_size: int = 1, max_size: int = 8, **kwargs: Any) -> ConnectionPool:
    # check_connection: a connection broken by a server restart is replaced on checkout, not handed out.
    kwargs.setdefault("check", ConnectionPool.check_connection)
    kwargs.setdefault("timeout", 10.0)
    kwargs.setdefault("reconnect_timeout", 3600.0)
    pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=False, **kwargs)
    try:
        pool.open(wait=True, timeout=15)
    except Exception as exc:  # psycopg_pool.PoolTimeout carries no connection detail
        pool.close()
        raise DatabaseError(f"cannot open a connection pool to {_safe_url(url)}: {exc}") from exc
    return pool
