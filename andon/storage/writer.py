"""The one writer: canonical events -> TimescaleDB, batched, with binary COPY and a connection pool.

Idempotent: every row is unique on (machine, ts, key). The fast path COPYs a batch straight into the
hypertables in one transaction; if any row already exists (a replay after a crash, a redelivered
message) the transaction is rolled back and the batch goes through a staging table with
``insert ... on conflict do nothing``, which stores only the new rows. Either way the batch is stored
exactly once, and the rollups of the ranges it touched are marked for recomputation in the same
transaction, so late and out-of-order events correct the rollups instead of being appended blindly.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from andon.events import STATE_CODES, Event, ProductionCount, StateChange, TelemetrySample
from andon.storage.plant_sync import machine_refs

log = logging.getLogger(__name__)

_TABLES: dict[str, tuple[str, list[str], list[str]]] = {
    # kind: (table, columns, binary COPY types)
    "state": (
        "state_events",
        ["ts", "machine", "state", "reason_code", "fault_code", "source_id", "key"],
        ["timestamptz", "int4", "int2", "text", "text", "text", "int8"],
    ),
    "count": (
        "count_events",
        ["ts", "machine", "total", "reject", "product", "source_id", "key", "total_counter", "reject_counter"],
        ["timestamptz", "int4", "int4", "int4", "text", "text", "int8", "int8", "int8"],
    ),
    "telemetry": (
        "telemetry",
        ["ts", "machine", "metric", "value", "source_id", "key"],
        ["timestamptz", "int4", "text", "float8", "text", "int8"],
    ),
}


@dataclass
class WriteResult:
    inserted: dict[str, int] = field(default_factory=lambda: {"state": 0, "count": 0, "telemetry": 0})
    duplicates: int = 0
    rejected: list[tuple[Event, str]] = field(default_factory=list)

    @property
    def total_inserted(self) -> int:
        return sum(self.inserted.values())


class UnknownMachine(LookupError):
    pass


class EventWriter:
    """Thread-safe; one instance per process is enough (it borrows pooled connections per batch)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._machines: dict[str, int] = {}
        self._units_seen: dict[str, set[int]] = {}  # metric -> machines whose unit is stored
        self._lock = threading.Lock()
        self.refresh_machines()

    def refresh_machines(self) -> None:
        with self.pool.connection() as conn:
            refs = machine_refs(conn)
        with self._lock:
            self._machines = {mid: ref.num for mid, ref in refs.items()}

    def machine_num(self, machine_id: str) -> int:
        num = self._machines.get(machine_id)
        if num is None:
            self.refresh_machines()
            num = self._machines.get(machine_id)
            if num is None:
                raise UnknownMachine(machine_id)
        return num

    # --- rows ---------------------------------------------------------------------------------------
    def _rows(self, events: Iterable[Event], result: WriteResult) -> tuple[dict[str, list[tuple[Any, ...]]],
                                                                           list[tuple[int, str, str]]]:
        """Rows per kind in the tables' column order, and the units of channels not stored yet.

        Rows repeating a key inside the batch are not weeded out here: the COPY then meets the unique
        index, and the batch goes through the staging path, which stores the first of them (rare: a
        redelivered message in the same batch as its original), so the common batch pays nothing."""
        state_rows: list[tuple[Any, ...]] = []
        count_rows: list[tuple[Any, ...]] = []
        telemetry_rows: list[tuple[Any, ...]] = []
        units: list[tuple[int, str, str]] = []
        machines = self._machines
        units_seen = self._units_seen
        units_in_batch: dict[str, set[int]] = {}
        state_codes = STATE_CODES
        add_telemetry = telemetry_rows.append
        for ev in events:
            num = machines.get(ev.machine_id)
            if num is None:
                try:
                    num = self.machine_num(ev.machine_id)
                except UnknownMachine:
                    result.rejected.append((ev, f"unknown machine {ev.machine_id!r}"))
                    continue
            ts = ev.ts
            if ts.tzinfo is None:
                result.rejected.append((ev, "timestamp without time zone"))
                continue
            cls = type(ev)
            if cls is TelemetrySample:
                metric = ev.metric
                add_telemetry((ts, num, metric, ev.value, ev.source_id, ev.key))
                if ev.unit:
                    # One upsert per new channel, not per sample (channels count as seen once stored).
                    nums = units_seen.get(metric)
                    if nums is None or num not in nums:
                        in_batch = units_in_batch.setdefault(metric, set())
                        if num not in in_batch:
                            in_batch.add(num)
                            units.append((num, metric, ev.unit))
            elif cls is StateChange:
                state_rows.append((ts, num, state_codes[ev.state], ev.reason_code, ev.fault_code, ev.source_id,
                                   ev.key))
            elif cls is ProductionCount:
                count_rows.append((ts, num, ev.total, ev.reject, ev.product, ev.source_id, ev.key,
                                   ev.total_counter, ev.reject_counter))
            else:  # pragma: no cover - the Event union is closed
                result.rejected.append((ev, f"not a canonical event: {type(ev).__name__}"))
        return {"state": state_rows, "count": count_rows, "telemetry": telemetry_rows}, units

    # --- writing ------------------------------------------------------------------------------------
    def write(self, events: Iterable[Event], conn: psycopg.Connection | None = None) -> WriteResult:
        """Store a batch exactly once. Raises psycopg.OperationalError if the database is unreachable
        (callers spool and retry); never stores a partial batch. With `conn`, the batch joins that
        connection's transaction (as a savepoint) instead of borrowing a pooled connection."""
        result = WriteResult()
        rows, units = self._rows(events, result)
        n_rows = sum(len(v) for v in rows.values())
        if n_rows == 0:
            return result
        if conn is not None:
            self._write_rows(conn, rows, units, result, n_rows)
        else:
            with self.pool.connection() as pooled:
                self._write_rows(pooled, rows, units, result, n_rows)
        for num, metric, _ in units:
            self._units_seen.setdefault(metric, set()).add(num)
        return result

    def _write_rows(self, conn: psycopg.Connection, rows: dict[str, list[tuple[Any, ...]]],
                    units: list[tuple[int, str, str]], result: WriteResult, n_rows: int) -> None:
        try:
            with conn.transaction():
                for kind, kind_rows in rows.items():
                    if kind_rows:
                        self._copy(conn, kind, kind_rows)
                self._after_insert(conn, rows, units)
            for kind, kind_rows in rows.items():
                result.inserted[kind] = len(kind_rows)
        except psycopg.errors.UniqueViolation:
            # Some rows are already stored (a replay): store only the new ones.
            with conn.transaction():
                inserted_rows: dict[str, list[tuple[Any, ...]]] = {}
                for kind, kind_rows in rows.items():
                    inserted_rows[kind] = self._insert_new(conn, kind, kind_rows) if kind_rows else []
                    result.inserted[kind] = len(inserted_rows[kind])
                self._after_insert(conn, inserted_rows, units)
            result.duplicates = n_rows - result.total_inserted


    @staticmethod
    def _copy(conn: psycopg.Connection, kind: str, kind_rows: Sequence[tuple[Any, ...]]) -> None:
        table, cols, types = _TABLES[kind]
        stmt = sql.SQL("copy {} ({}) from stdin (format binary)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            copy.set_types(types)
            for row in kind_rows:
                copy.write_row(row)

    @staticmethod
    def _insert_new(conn: psycopg.Connection, kind: str, kind_rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        table, cols, types = _TABLES[kind]
        stage = f"_stage_{table}"
        conn.execute(
            sql.SQL("create temp table if not exists {} (like {} including defaults) on commit delete rows").format(
                sql.Identifier(stage), sql.Identifier(table)
            )
        )
        stmt = sql.SQL("copy {} ({}) from stdin (format binary)").format(
            sql.Identifier(stage), sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        with conn.cursor() as cur:
            with cur.copy(stmt) as copy:
                copy.set_types(types)
                for row in kind_rows:
                    copy.write_row(row)
            col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
            cur.execute(
                sql.SQL("insert into {} ({}) select {} from {} on conflict do nothing returning {}").format(
                    sql.Identifier(table), col_list, col_list, sql.Identifier(stage), col_list
                )
            )
            return cur.fetchall()

    @staticmethod
    def _after_insert(conn: psycopg.Connection, rows: dict[str, list[tuple[Any, ...]]],
                      units: list[tuple[int, str, str]]) -> None:
        # Ranges to recompute (rollups, downtime) and the newest data seen, per machine.
        dirty: dict[int, list[dt.datetime]] = {}
        seen: dict[int, dt.datetime] = {}
        for kind in ("state", "count", "telemetry"):
            for row in rows[kind]:
                ts, num = row[0], row[1]
                if kind != "telemetry":
                    rng = dirty.get(num)
                    if rng is None:
                        dirty[num] = [ts, ts]
                    elif ts < rng[0]:
                        rng[0] = ts
                    elif ts > rng[1]:
                        rng[1] = ts
                last = seen.get(num)
                if last is None or ts > last:
                    seen[num] = ts
        with conn.cursor() as cur:
            if dirty:
                cur.executemany(
                    "insert into rollup_dirty (machine, from_ts, to_ts) values (%s, %s, %s)",
                    [(num, a, b) for num, (a, b) in dirty.items()],
                )
            if seen:
                cur.executemany(
                    "insert into machine_last_seen (machine, ts) values (%s, %s) on conflict (machine) do update "
                    "set ts = greatest(machine_last_seen.ts, excluded.ts)",
                    sorted(seen.items()),
                )
            if units:
                cur.executemany(
                    "insert into telemetry_metrics (machine, metric, unit) values (%s, %s, %s) "
                    "on conflict (machine, metric) do update set unit = excluded.unit",
                    units,
                )
