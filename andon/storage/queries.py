"""Query functions returning pandas DataFrames in the shapes the analytics core takes.

``periods`` answers any window the same way: whole rollup periods inside it come from machine_rollups,
and whatever is not covered (the window's edges inside a period, time after the rollup watermark) is
computed from the raw events by the same code that builds the rollups (storage.timeline), so a figure
never changes with the zoom of a chart.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psycopg

from andon.events import STATE_BY_CODE
from andon.storage import rollups, timeline
from andon.storage.rollups import PlantContext

UTC = dt.UTC
log = logging.getLogger(__name__)


def _check_window(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds need a time zone")
    if end <= start:
        raise ValueError("window end must be after its start")
    return start.astimezone(UTC), end.astimezone(UTC)


# PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC.
_PG_EPOCH_US = 946_684_800_000_000
_SEP = "\x1f"  # between the text values of one string_agg (never inside a calendar kind or shift key)


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


_SUM_COLUMNS = rollups.SUM_COLUMNS
_COUNT_SUMS = ("total_count", "reject_count", "startup_rejects")
# Only rows below each machine's watermark: a join, not a sub-select evaluated once per row.
_HOURLY_SOURCE = ("from machine_rollups r join rollup_watermarks w on w.machine = r.machine "
                  "where r.machine = any(%(nums)s) and r.period_end <= w.covered_to ")
# Periods summed per group, packed as machine_rollups_daily.packed is (see migration 0013), then the
# calendar kind and (shift grain) the shift.
_GROUPED = (
    "select int4send(r.machine) || timestamptz_send(min(r.period_start)) || timestamptz_send(max(r.period_end)) || "
    + " || ".join(f"int8send(sum(r.{c})::bigint)" if c in _COUNT_SUMS else f"float8send(sum(r.{c})::float8)"
                  for c in _SUM_COLUMNS)
    + " || float8send(sum(extract(epoch from r.period_end - r.period_start))::float8), r.calendar_kind, {shift} "
    + _HOURLY_SOURCE
)
_LOCAL_DAY = "(r.period_start at time zone %(tz)s)::date"
_PACKED = np.dtype([("machine", ">i4"), ("period_start", ">i8"), ("period_end", ">i8"),
                    *((c, ">i8" if c in _COUNT_SUMS else ">f8") for c in _SUM_COLUMNS), ("period_s", ">f8")])


def _whole_days(start: dt.datetime, end: dt.datetime, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime] | None:
    """[first local midnight at or after start, last local midnight at or before end), if a day fits."""
    first = rollups.local_day(start, tz)
    if rollups.local_midnight(first, tz) < start:
        first += dt.timedelta(days=1)
    a, b = rollups.local_midnight(first, tz), rollups.local_midnight(rollups.local_day(end, tz), tz)
    return (a, b) if a < b else None


def _grouped(cur: psycopg.Cursor, nums: list[int], tz: ZoneInfo, grain: str, start: dt.datetime,
             end: dt.datetime, stored_days: bool = True) -> dict[str, Any]:
    """Stored rows inside [start, end) summed per machine, calendar kind and local day (day grain; shift
    None) or shift (shift grain), as columns named as rollups.DAILY_COLUMNS (numpy arrays; object arrays
    for the text columns).

    Day grain: whole local days come from the stored day grain (machine_rollups_daily), only the parts of
    the window before its first and after its last local midnight from the periods; one statement, so
    one snapshot of rollups, day rows and watermarks. The numbers travel packed (machine_rollups_daily's
    packed column, the same bytes computed for the edges), all rows in one bytea read straight into
    numpy: no Python object, nor a server send call, per number."""
    params: dict[str, object] = {"nums": nums, "start": start, "end": end, "tz": tz.key}
    days = _whole_days(start, end, tz) if grain == "day" and stored_days else None
    # Day grain: per machine, calendar kind and local day (as the stored day rows); shift grain: per
    # machine, calendar kind and shift.
    if grain == "day":
        grouped, group_by = _GROUPED.format(shift="''"), f"group by r.machine, r.calendar_kind, {_LOCAL_DAY}"
    else:
        grouped, group_by = _GROUPED.format(shift="coalesce(r.shift_key, '')"), \
            "group by r.machine, r.calendar_kind, r.shift_key"
    if days is None:
        rows = grouped + f"and r.period_start >= %(start)s and r.period_end <= %(end)s {group_by}"
    else:
        d0, d1 = days
        edge = grouped + ("and r.period_start >= %({a})s and r.period_start < %({b})s and r.period_end <= %({b})s "
                          + group_by)
        # (Day rows exist only for stored periods, all below the watermark: refresh writes periods, day
        # rows and watermark in one transaction. No join needed.)
        rows = ("select d.packed, d.calendar_kind, '' from machine_rollups_daily d "
                "where d.machine = any(%(nums)s) and d.day >= %(day0)s and d.day < %(day1)s "
                f"union all ({edge.format(a='start', b='d0')}) union all ({edge.format(a='d1', b='end')})")
        params.update(d0=d0, d1=d1, day0=rollups.local_day(d0, tz), day1=rollups.local_day(d1, tz))
    # One aggregate node: the string_aggs see the rows in the same order.
    shift_agg = "string_agg(shift, chr(31))" if grain == "shift" else "null"
    packed, kinds, shifts = cur.execute(
        f"select string_agg(packed, ''::bytea), string_agg(kind, chr(31)), {shift_agg} "
        f"from ({rows}) g (packed, kind, shift)", params
    ).fetchone()  # type: ignore[misc]
    if packed is None:  # no rows
        return {}
    rec = np.frombuffer(packed, dtype=_PACKED)
    cols: dict[str, Any] = {c: rec[c].astype(rec.dtype[c].newbyteorder("=")) for c in _PACKED.names}
    for c in ("period_start", "period_end"):
        cols[c] = (cols[c] + _PG_EPOCH_US).astype("datetime64[us]")
    cols["calendar_kind"] = np.array(kinds.split(_SEP), dtype=object)
    cols["shift_key"] = (np.array([k or None for k in shifts.split(_SEP)], dtype=object) if shifts is not None
                         else np.full(len(rec), None, dtype=object))
    if not len(rec) == len(cols["calendar_kind"]) == len(cols["shift_key"]):
        raise RuntimeError("packed rollup rows and their text columns disagree")
    return cols


def _tiles(cols: dict[str, Any]) -> bool:
    """Whether each machine's grouped rows cover their span without a gap (their lengths add up to it)."""
    if not cols:
        return True
    machine = cols["machine"]
    for num in np.unique(machine):
        mine = machine == num
        span_us = (cols["period_end"][mine].max() - cols["period_start"][mine].min()) / np.timedelta64(1, "us")
        if abs(span_us / 1e6 - cols["period_s"][mine].sum()) >= 1e-3:
            return False
    return True


def periods(
    conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime, end: dt.datetime,
    now: dt.datetime | None = None, grain: str | None = None,
) -> pd.DataFrame:
    """Rollup-shaped rows covering [start, end) for each machine.

    grain None: one row per period (local hour cut at calendar boundaries). grain "day" or "shift": the
    stored periods summed per machine, calendar kind and local day (shift None), or per machine, calendar
    kind and shift, so a year reads as a few rows per machine-day (whole local days straight from the
    stored day grain, see migrations 0013 and 0014);
    the window's live edges stay as fine periods. Sums are the same either way; only the time resolution
    of the rows differs (use "day" for day/week buckets, "shift" for shift buckets, None for hour buckets).
    """
    if grain not in (None, "day", "shift"):
        raise ValueError(f"grain must be None, 'day' or 'shift', got {grain!r}")
    start, end = _check_window(start, end)
    now = now or dt.datetime.now(UTC)
    ms = [ctx.by_id[mid] for mid in machine_ids]
    nums = [m.num for m in ms]
    # Binary results: no text parsing of the (many) numbers and timestamps.
    cur = conn.cursor(binary=True)
    if grain is None:
        rows = cur.execute(
            f"select {', '.join(f'r.{c}' for c in rollups.ROLLUP_COLUMNS)} " + _HOURLY_SOURCE
            + "and r.period_start >= %(start)s and r.period_end <= %(end)s order by r.machine, r.period_start",
            {"nums": nums, "start": start, "end": end},
        ).fetchall()
        live = _live_rows(conn, ms, _rows_by_machine(rows), start, end, now, grouped=False)
        return _frame(live, rollups.ROLLUP_COLUMNS, ms)
    # All machines of one call share a site in practice; group by each machine's own local day.
    parts: list[dict[str, Any]] = []
    for tz in sorted({m.tz for m in ms}, key=lambda z: z.key):
        group = [m.num for m in ms if m.tz == tz]
        got = _grouped(cur, group, tz, grain, start, end)
        if grain == "day" and not _tiles(got):
            # Day rows out of step with the periods (refresh writes both in one transaction, so this should
            # not happen): the periods alone are always right.
            log.warning("stored day rows do not tile the periods of machines %s: grouping periods", group)
            got = _grouped(cur, group, tz, grain, start, end, stored_days=False)
        if got:
            parts.append(got)
    names = rollups.DAILY_COLUMNS
    if len(parts) == 1:
        cols = parts[0]
    else:
        cols = {c: np.concatenate([p[c] for p in parts]) for c in names} if parts else _columns([], names)
    spans: dict[int, tuple[dt.datetime, dt.datetime]] = {}
    machine = cols["machine"]
    for num in np.unique(machine):
        mine = machine == num
        spans[int(num)] = (_utc(cols["period_start"][mine].min()), _utc(cols["period_end"][mine].max()))
    live = _columns(_live_rows(conn, ms, spans, start, end, now, grouped=True), names)
    cols = {c: np.concatenate([cols[c], live[c]]) for c in names}
    # In machine order, each machine's rows in time order.
    position = np.zeros(max((m.num for m in ms), default=0) + 1, dtype=np.int64)
    position[[m.num for m in ms]] = np.arange(len(ms))
    order = np.lexsort((cols["period_start"], position[cols["machine"]]))
    return _frame_of({c: v[order] for c, v in cols.items()}, names, ms)


def _rows_by_machine(rows: list[tuple]) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r)
    return out


def _utc(t: np.datetime64) -> dt.datetime:
    return _EPOCH + int(t.astype("datetime64[us]").astype(np.int64)) * _US


def _live_rows(conn: psycopg.Connection, ms: list[rollups.MachineContext],
               stored: dict[int, list[tuple]] | dict[int, tuple[dt.datetime, dt.datetime]],
               start: dt.datetime, end: dt.datetime, now: dt.datetime, grouped: bool) -> list[tuple]:
    """Each machine's stored rows (a list of rows, or only the span of stored columns) with the parts of
    [start, end) outside its stored span computed from raw events (all machines' reads together);
    grouped rows carry their length (period_s)."""
    horizons = rollups.horizons_of(conn, ms)
    live: list[tuple[rollups.MachineContext, dt.datetime, dt.datetime, dt.datetime | None]] = []
    parts: list[list[tuple] | int] = []  # stored rows, or the index of a live piece
    for m in ms:
        mine = stored.get(m.num)
        _, horizon = horizons[m.num]
        # A source still inside its heartbeat: its last state holds until now, not beyond.
        horizon = min(horizon, now) if horizon is not None else start  # never any data: all "no data"
        if mine:
            # The stored span (grouped rows are not contiguous: take the extremes of all of them).
            r0, r1 = (min(r[1] for r in mine), max(r[2] for r in mine)) if isinstance(mine, list) else mine
            if start < r0:
                parts.append(len(live))
                live.append((m, start, r0, horizon))
            if isinstance(mine, list):
                parts.append(mine)
            if r1 < end:
                parts.append(len(live))
                live.append((m, r1, end, horizon))
        else:
            parts.append(len(live))
            live.append((m, start, end, horizon))
    computed = rollups.compute_periods_many(conn, live)
    out: list[tuple] = []
    for part in parts:
        out.extend(computed[part] if isinstance(part, int) else part)
    if grouped:
        # Grouped rows are not contiguous: their length is the sum of their periods' lengths.
        n = len(rollups.ROLLUP_COLUMNS)
        out = [r if len(r) > n else (*r, (r[2] - r[1]).total_seconds()) for r in out]
    return out


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_US = dt.timedelta(microseconds=1)
_TEXT_COLUMNS = ("calendar_kind", "shift_key")
_INT_COLUMNS = ("machine", "total_count", "reject_count", "startup_rejects")


def _columns(rows: list[tuple], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Rollup-shaped rows as numpy columns (times as datetime64[us], exactly: integer arithmetic)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data: dict[str, np.ndarray] = {}
    for name, values in zip(names, columns, strict=True):
        if name in ("period_start", "period_end"):
            data[name] = np.fromiter(((t - _EPOCH) // _US for t in values), dtype=np.int64,
                                     count=len(values)).astype("datetime64[us]")
        elif name in _TEXT_COLUMNS:
            data[name] = np.array(values, dtype=object)
        elif name in _INT_COLUMNS:
            data[name] = np.array(values, dtype=np.int64)
        else:
            data[name] = np.array(values, dtype=np.float64)
    return data


def _frame_of(cols: dict[str, np.ndarray], names: Sequence[str], ms: list[rollups.MachineContext]) -> pd.DataFrame:
    """The frame of numpy columns, machine numbers turned into machine ids. Text columns stay plain object
    columns: pandas would otherwise copy every id, kind and shift key into an Arrow string column (a few
    ms for a year of rows) that the analytics read back as objects anyway."""
    ids = np.empty(max((m.num for m in ms), default=0) + 1, dtype=object)
    ids[[m.num for m in ms]] = [m.id for m in ms]
    data: dict[str, object] = {}
    for name in names:
        values = cols[name]
        if name in ("period_start", "period_end"):
            data[name] = pd.to_datetime(values.astype("datetime64[us]").view(np.int64), unit="us", utc=True)
        elif name == "machine":
            data[name] = pd.Series(ids[values.astype(np.int64)], dtype=object, copy=False)
        elif name in _TEXT_COLUMNS:
            data[name] = pd.Series(values, dtype=object, copy=False)
        else:
            data[name] = values
    return pd.DataFrame(data, columns=list(names))


def _frame(rows: list[tuple], names: Sequence[str], ms: list[rollups.MachineContext]) -> pd.DataFrame:
    """Rollup-shaped rows as a frame, built column by column (a year of rows: the generic constructor
    infers every column from Python objects and parses the timestamps one by one)."""
    return _frame_of(_columns(rows, names), names, ms)


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
