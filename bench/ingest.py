#!/usr/bin/env python3
"""Benchmark: canonical events through the writer vs raw binary COPY of the same rows, same database, same run.

The ceiling is psycopg binary COPY of the already-built row tuples into hypertables identical to
Andon's (same columns, chunking and indexes). The writer is measured end to end from canonical event
objects: machine look-up, in-batch de-duplication, COPY, dirty-range and last-seen bookkeeping, with
idempotency included (a unique index on every row). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from andon.plant import load_plant_model
from andon.storage import db, plant_sync
from andon.storage.writer import _TABLES, EventWriter

BASE = "postgresql://postgres@127.0.0.1:5432/postgres"
MACHINES = [f"L1-M{i}" for i in range(1, 7)]


def make_events(n: int, start: dt.datetime, seed: int) -> list:
    rnd = random.Random(seed)
    out: list = []
    states = list(MachineState)
    metrics = ["vibration_rms", "bearing_temp", "motor_current", "cycle_time"]
    for i in range(n):
        m = MACHINES[i % len(MACHINES)]
        ts = start + dt.timedelta(milliseconds=i * 7)
        r = i % 20
        if r == 0:
            out.append(StateChange(m, ts, states[rnd.randrange(7)], "bench", fault_code="E12"))
        elif r < 4:
            out.append(ProductionCount(m, ts, 1, 0, "bench", total_counter=i, reject_counter=0))
        else:
            out.append(TelemetrySample(m, ts, metrics[r % 4], rnd.random(), "bench", unit="u"))
    return out


def raw_rows(writer: EventWriter, events: list) -> dict[str, list[tuple]]:
    from andon.storage.writer import WriteResult

    rows, _ = writer._rows(events, WriteResult())
    return rows


def copy_raw(conn: psycopg.Connection, rows: dict[str, list[tuple]]) -> None:
    with conn.transaction():
        for kind, kind_rows in rows.items():
            table, cols, types = _TABLES[kind]
            stmt = f"copy raw_{table} ({', '.join(cols)}) from stdin (format binary)"
            with conn.cursor() as cur, cur.copy(stmt) as cp:
                cp.set_types(types)
                for row in kind_rows:
                    cp.write_row(row)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000, help="events per run")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    name = f"andon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(BASE, autocommit=True) as c:
        c.execute(f'create database "{name}"')
    url = make_conninfo(BASE, dbname=name)
    try:
        db.upgrade(url, create_db=False)
        model = load_plant_model(Path(__file__).resolve().parent.parent / "config" / "plant.yaml")
        with psycopg.connect(url, autocommit=True) as conn:
            plant_sync.sync_plant_model(conn, model, "bench")
            for kind, (table, _, _) in _TABLES.items():
                conn.execute(f"create table raw_{table} (like {table} including defaults including indexes)")
                interval = "1 day" if kind == "telemetry" else "7 days"
                conn.execute(f"select create_hypertable('raw_{table}', 'ts', chunk_time_interval => interval "
                             f"'{interval}')")
        pool = db.make_pool(url, max_size=2)
        writer = EventWriter(pool)
        copy_rates, writer_rates = [], []
        with psycopg.connect(url) as conn:
            for run in range(args.runs):
                # Fresh timestamps per run so both sides insert new rows into the same kind of chunks.
                start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=3 * run)
                events = make_events(args.events, start, run)
                batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
                row_batches = [raw_rows(writer, b) for b in batches]
                t = time.perf_counter()
                for rb in row_batches:
                    copy_raw(conn, rb)
                copy_rates.append(len(events) / (time.perf_counter() - t))
                t = time.perf_counter()
                for b in batches:
                    writer.write(b)
                writer_rates.append(len(events) / (time.perf_counter() - t))
                print(f"run {run}: raw COPY {copy_rates[-1]:,.0f} rows/s, writer {writer_rates[-1]:,.0f} events/s")
            # Idempotency check in the same run: replaying the last batch stores nothing.
            replay = writer.write(batches[-1])
            assert replay.total_inserted == 0, replay
            t = time.perf_counter()
            writer.write(batches[-1])
            replay_rate = len(batches[-1]) / (time.perf_counter() - t)
        pool.close()
    finally:
        with psycopg.connect(BASE, autocommit=True) as c:
            c.execute(f'drop database if exists "{name}" with (force)')
    ev = statistics.median(writer_rates)
    cp = statistics.median(copy_rates)
    print(f"median: writer {ev:,.0f} events/s, raw COPY {cp:,.0f} rows/s, ratio {ev / cp:.2f}; "
          f"full-replay batch {replay_rate:,.0f} events/s")
    print(json.dumps({"events_per_s": round(ev), "copy_rows_per_s": round(cp), "ratio": round(ev / cp, 3),
                      "replay_events_per_s": round(replay_rate), "events_per_run": args.events,
                      "batch": args.batch, "runs": args.runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
