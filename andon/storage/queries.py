"""Query functions returning pandas DataFrames in the shapes the analytics core takes.

``periods`` answers any window the same way: whole rollup periods inside it come from machine_rollups,
and whatever is not covered (the window's edges inside a period, time after the rollup watermark) is
computed from the raw events by the same code that builds the rollups (storage.timeline), so a figure
never changes with the zoom of a chart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
import psycopg

from andon.events import STATE_BY_CODE
from andon.storage import rollups, timeline
from andon.storage.rollups import PlantContext

UTC = dt.UTC


def _check_window(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds need a time zone")
    if end <= start:
        raise ValueError("window end must be after its start")
    return start.astimezone(UTC), end.astimezone(UTC)


def ensure_fresh(conn: psycopg.Connection, ctx: PlantContext, now: dt.datetime | None = None) -> None:
    """Apply pending dirty ranges before reading, so a query never sees stale rollups or stops."""
    pending = conn.execute("select exists (select 1 from rollup_dirty)").fetchone()[0]
    conn.commit()
    if pending:
        try:
            rollups.refresh(conn, ctx, now)
            conn.commit()
        except psycopg.errors.ReadOnlySqlTransaction:
            # A read replica: the primary's background refresher keeps rollups current.
            conn.rollback()


_SUM_COLUMNS = rollups.ROLLUP_COLUMNS[5:]


def periods(
    conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime, end: dt.datetime,
    now: dt.datetime | None = None, grain: str | None = None,
) -> pd.DataFrame:
    """Rollup-shaped rows covering [start, end) for each machine.

    grain None: one row per period (local hour cut at calendar boundaries). grain "day" or "shift": the
    stored periods summed per machine, calendar kind, shift and local day (or shift), so a year reads as
    a few rows per machine-day; the window's live edges stay as fine periods. Sums are the same either
    way; only the time resolution of the rows differs (use "day" for day/week buckets, "shift" for shift
    buckets, None for hour buckets).
    """
    if grain not in (None, "day", "shift"):
        raise ValueError(f"grain must be None, 'day' or 'shift', got {grain!r}")
    start, end = _check_window(start, end)
    now = now or dt.datetime.now(UTC)
    ms = [ctx.by_id[mid] for mid in machine_ids]
    nums = [m.num for m in ms]
    sums = ", ".join(f"sum(r.{c})::bigint" if c in ("total_count", "reject_count", "startup_rejects")
                     else f"sum(r.{c})::float8" for c in _SUM_COLUMNS)
    # Only rows below each machine's watermark: a join, not a sub-select evaluated once per row.
    source = ("from machine_rollups r join rollup_watermarks w on w.machine = r.machine "
              "where r.machine = any(%s) and r.period_start >= %s and r.period_end <= %s "
              "and r.period_end <= w.covered_to")
    # Binary results: no text parsing of the (many) numbers and timestamps.
    cur = conn.cursor(binary=True)
    if grain is None:
        rows = cur.execute(
            f"select {', '.join(f'r.{c}' for c in rollups.ROLLUP_COLUMNS)} {source} "
            "order by r.machine, r.period_start",
            (nums, start, end),
        ).fetchall()
    else:
        # All machines of one call share a site in practice; group by each machine's own local day.
        tz_of = {m.num: str(m.tz) for m in ms}
        rows = []
        for tz in sorted(set(tz_of.values())):
            group_nums = [n for n in nums if tz_of[n] == tz]
            day = "(r.period_start at time zone %s)::date" if grain == "day" else "null::date"
            rows += cur.execute(
                f"select r.machine, min(r.period_start), max(r.period_end), r.calendar_kind, r.shift_key, {sums}, "
                f"sum(extract(epoch from r.period_end - r.period_start))::float8 {source} "
                f"group by r.machine, r.calendar_kind, r.shift_key, {day} order by r.machine, 2",
                ((group_nums, start, end, tz) if grain == "day" else (group_nums, start, end)),
            ).fetchall()
    by_machine: dict[int, list[tuple]] = {n: [] for n in nums}
    for r in rows:
        by_machine[r[0]].append(r)
    out: list[tuple] = []
    for m in ms:
        stored = by_machine[m.num]
        _, horizon = rollups.horizon_of(conn, m)
        # A source still inside its heartbeat: its last state holds until now, not beyond.
        horizon = min(horizon, now) if horizon is not None else start  # never any data: all "no data"
        if stored:
            # The stored span (grouped rows are not contiguous: take the extremes of all of them).
            r0, r1 = min(r[1] for r in stored), max(r[2] for r in stored)
            if start < r0:
                out.extend(rollups.compute_periods(conn, m, start, r0, horizon))
            out.extend(stored)
            if r1 < end:
                out.extend(rollups.compute_periods(conn, m, r1, end, horizon))
        else:
            out.extend(rollups.compute_periods(conn, m, start, end, horizon))
    n = len(rollups.ROLLUP_COLUMNS)
    names = rollups.ROLLUP_COLUMNS if grain is None else [*rollups.ROLLUP_COLUMNS, "period_s"]
    if grain is not None:
        # Grouped rows are not contiguous: their length is the sum of their periods' lengths.
        out = [r if len(r) > n else (*r, (r[2] - r[1]).total_seconds()) for r in out]
    df = _frame(out, names)
    id_of = {m.num: m.id for m in ms}
    df["machine"] = df["machine"].map(id_of)
    return df


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_US = dt.timedelta(microseconds=1)
_TEXT_COLUMNS = ("calendar_kind", "shift_key")
_INT_COLUMNS = ("machine", "total_count", "reject_count", "startup_rejects")


def _frame(rows: list[tuple], names: Sequence[str]) -> pd.DataFrame:
    """Rollup-shaped rows as a frame, built column by column (a year of rows: the generic constructor
    infers every column from Python objects and parses the timestamps one by one)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data: dict[str, object] = {}
    for name, values in zip(names, columns, strict=True):
        if name in ("period_start", "period_end"):
            # Whole microseconds, exactly: integer arithmetic, not float seconds.
            data[name] = pd.to_datetime(np.fromiter(((t - _EPOCH) // _US for t in values), dtype=np.int64,
                                                    count=len(values)), unit="us", utc=True)
        elif name in _TEXT_COLUMNS:
            data[name] = np.array(values, dtype=object)
        elif name in _INT_COLUMNS:
            data[name] = np.array(values, dtype=np.int64)
        else:
            data[name] = np.array(values, dtype=np.float64)
    return pd.DataFrame(data, columns=list(names))


def stops(
    conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime, end: dt.datetime,
) -> pd.DataFrame:
    """Stops overlapping the window, with the effective reason (manual, else automatic) and its class."""
    start, end = _check_window(start, end)
    nums = [ctx.by_id[mid].num for mid in machine_ids]
    rows = conn.execute(
        """
        select d.id, m.id, d.start_ts, d.end_ts, d.state, coalesce(d.reason_code, d.auto_reason) as reason,
               r.category, r.planned, r.failure, r.loss, d.fault_code, d.comment, d.reason_code is not null,
               d.set_by, d.set_at
        from downtime d
        join machines m on m.num = d.machine
        left join reasons r on r.code = coalesce(d.reason_code, d.auto_reason)
        where d.machine = any(%s) and d.start_ts < %s and (d.end_ts is null or d.end_ts > %s)
        order by d.start_ts, m.id
        """,
        (nums, end, start),
    ).fetchall()
    df = pd.DataFrame(
        rows,
        columns=["stop_id", "machine", "start_ts", "end_ts", "state", "reason_code", "category", "planned",
                 "failure", "loss", "fault_code", "comment", "manual", "set_by", "set_at"],
    )
    df["state"] = df["state"].map(lambda c: STATE_BY_CODE[c].value)
    for c in ("reason_code", "category", "planned", "failure", "loss", "fault_code", "comment", "set_by"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    for c in ("start_ts", "end_ts", "set_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    df["shift_key"] = [_shift_key(ctx, mid, ts) for mid, ts in zip(df["machine"], df["start_ts"], strict=True)]
    return df


def _shift_key(ctx: PlantContext, machine_id: str, ts: pd.Timestamp) -> str | None:
    m = ctx.by_id[machine_id]
    t = ts.to_pydatetime()
    grid = timeline.period_grid(m.calendar, m.tz, t, t + dt.timedelta(seconds=1))
    return grid[0].shift_key if grid else None


def intervals(
    conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime, end: dt.datetime,
    now: dt.datetime | None = None,
) -> pd.DataFrame:
    """Raw state intervals clipped to the window (no data after each machine's horizon)."""
    start, end = _check_window(start, end)
    now = now or dt.datetime.now(UTC)
    out = []
    for mid in machine_ids:
        m = ctx.by_id[mid]
        _, horizon = rollups.horizon_of(conn, m)
        horizon = min(horizon, now) if horizon is not None else start
        raw = rollups.read_slice(conn, m, start, end)
        times = [start, *raw.state_ts]
        codes = [raw.initial_state or timeline.OFFLINE, *raw.state_codes]
        limit = min(max(horizon, start), end)
        for i, (t, c) in enumerate(zip(times, codes, strict=True)):
            b = min(times[i + 1] if i + 1 < len(times) else end, limit)
            if b > t:
                out.append((mid, t, b, STATE_BY_CODE[c].value))
        if limit < end:
            out.append((mid, limit, end, "offline"))
    df = pd.DataFrame(out, columns=["machine", "start", "end", "state"])
    for c in ("start", "end"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def counts(
    conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime, end: dt.datetime,
) -> pd.DataFrame:
    start, end = _check_window(start, end)
    nums = [ctx.by_id[mid].num for mid in machine_ids]
    rows = conn.execute(
        "select m.id, c.ts, c.total, c.reject, c.product from count_events c join machines m on m.num = c.machine "
        "where c.machine = any(%s) and c.ts >= %s and c.ts < %s order by c.ts",
        (nums, start, end),
    ).fetchall()
    df = pd.DataFrame(rows, columns=["machine", "ts", "total", "reject", "product"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def telemetry(
    conn: psycopg.Connection, ctx: PlantContext, machine_id: str, metrics: Sequence[str] | None,
    start: dt.datetime, end: dt.datetime,
) -> pd.DataFrame:
    start, end = _check_window(start, end)
    num = ctx.by_id[machine_id].num
    if metrics:
        rows = conn.execute(
            "select ts, metric, value from telemetry where machine = %s and metric = any(%s) and ts >= %s "
            "and ts < %s order by metric, ts",
            (num, list(metrics), start, end),
        ).fetchall()
    else:
        rows = conn.execute(
            "select ts, metric, value from telemetry where machine = %s and ts >= %s and ts < %s order by metric, ts",
            (num, start, end),
        ).fetchall()
    df = pd.DataFrame(rows, columns=["ts", "metric", "value"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def current_states(conn: psycopg.Connection, ctx: PlantContext, now: dt.datetime | None = None) -> pd.DataFrame:
    """Each machine's current state, since when, and its reason; offline past the heartbeat."""
    now = now or dt.datetime.now(UTC)
    rows = conn.execute(
        """
        select m.id, e.ts, e.state, e.reason_code, e.fault_code, s.ts
        from machines m
        left join lateral (select ts, state, reason_code, fault_code from state_events
                           where machine = m.num order by ts desc limit 1) e on true
        left join machine_last_seen s on s.machine = m.num
        where not m.retired
        order by m.line_id, m.position
        """
    ).fetchall()
    out = []
    for mid, ts, state, reason, fault, last_seen in rows:
        m = ctx.by_id.get(mid)
        heartbeat = m.heartbeat_s if m else 60.0
        if ts is None or last_seen is None or now - last_seen > dt.timedelta(seconds=heartbeat):
            since = (last_seen + dt.timedelta(seconds=heartbeat)) if last_seen else None
            out.append((mid, "offline", since, None, None, last_seen))
        else:
            auto = timeline.map_fault(m.fault_map, fault, reason, m.known_reasons) if m else reason
            out.append((mid, STATE_BY_CODE[state].value, ts, auto, fault, last_seen))
    return pd.DataFrame(out, columns=["machine", "state", "since", "reason_code", "fault_code", "last_seen"])


def last_counters(conn: psycopg.Connection, source_id: str) -> list[tuple[str, int, int, dt.datetime]]:
    """The newest raw counter readings a source stored, per machine: lets a restarted collector resume
    turning counters into deltas without losing or doubling parts."""
    return conn.execute(
        """
        select m.id, c.total_counter, c.reject_counter, c.ts
        from machines m
        join lateral (select total_counter, coalesce(reject_counter, 0) as reject_counter, ts from count_events
                      where machine = m.num and source_id = %s and total_counter is not null
                      order by ts desc limit 1) c on true
        """,
        (source_id,),
    ).fetchall()


def lock_and_last_counter(conn: psycopg.Connection, source_id: str, machine_id: str
                          ) -> tuple[int, int, dt.datetime] | None:
    """Serialise counter deltas of one (source, machine) across API processes for the rest of the
    transaction, and return its newest stored counter reading (total, reject, ts)."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"counter/{source_id}/{machine_id}",))
    return conn.execute(
        "select c.total_counter, coalesce(c.reject_counter, 0), c.ts from count_events c "
        "join machines m on m.num = c.machine where m.id = %s and c.source_id = %s and c.total_counter is not null "
        "order by c.ts desc limit 1",
        (machine_id, source_id),
    ).fetchone()


def dead_letters(conn: psycopg.Connection, rows: list[tuple]) -> None:
    """(received_at, source_id, topic, reason, payload bytes) rows into the dead-letter table."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into dead_letters (received_at, source_id, topic, reason, payload) values (%s, %s, %s, %s, %s)",
            rows,
        )
