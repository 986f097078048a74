"""Rollups and downtime, kept up to date as data arrives.

``refresh`` recomputes, per machine, the rollup periods and stops of every range the writer marked dirty
(new, late or out-of-order events), and extends the rollups up to the last whole local hour before the
newest data. Recomputing from the raw events (never adding increments) makes it idempotent: running it
twice, or after a replay, gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from andon.plant import Calendar, PlantModel
from andon.storage import timeline
from andon.storage.plant_sync import current_plant_model

log = logging.getLogger(__name__)
UTC = dt.UTC
STOP_CLASS_COLUMNS = ["s_stop_planned", "s_stop_small", "s_stop_breakdown"]
ROLLUP_COLUMNS = [
    "machine", "period_start", "period_end", "calendar_kind", "shift_key", *timeline.STATE_COLUMNS,
    "total_count", "reject_count", "startup_rejects", "ideal_time_s", *STOP_CLASS_COLUMNS,
]
SUM_COLUMNS = ROLLUP_COLUMNS[5:]
# Rows of periods summed per group (queries.periods' day and shift grains): the sums, the group's first
# start, last end and length in seconds.
DAILY_COLUMNS = ["machine", "period_start", "period_end", "calendar_kind", "shift_key", *SUM_COLUMNS, "period_s"]
# The stored day grain (machine_rollups_daily, migrations 0013 and 0014): one such row per machine, local
# day and calendar kind (no shift).
STORED_DAILY_COLUMNS = [c for c in DAILY_COLUMNS if c != "shift_key"]


@dataclass(frozen=True)
class MachineContext:
    num: int
    id: str
    calendar: Calendar
    tz: ZoneInfo
    ideal_cycle_s: float
    products: dict[str, float]
    fault_map: dict[str, str]
    heartbeat_s: float
    startup_window_s: float
    small_stop_threshold_s: float
    known_reasons: frozenset[str] = frozenset()

    def ideal_for(self, product: str | None) -> float:
        return self.products.get(product, self.ideal_cycle_s) if product else self.ideal_cycle_s


@dataclass
class PlantContext:
    model: PlantModel
    machines: dict[int, MachineContext]
    by_id: dict[str, MachineContext] = field(default_factory=dict)


def load_context(conn: psycopg.Connection) -> PlantContext:
    model = current_plant_model(conn)
    if model is None:
        raise LookupError("no plant model in the database: run `andon db upgrade` with a plant file")
    nums = dict(conn.execute("select id, num from machines").fetchall())
    ctx: dict[int, MachineContext] = {}
    for site in model.sites:
        for line in site.lines:
            for m in line.machines:
                if m.id not in nums:
                    continue
                ctx[nums[m.id]] = MachineContext(
                    num=nums[m.id], id=m.id, calendar=site.calendar, tz=site.tz, ideal_cycle_s=m.ideal_cycle_s,
                    products=dict(m.products), fault_map=dict(m.fault_map),
                    heartbeat_s=model.settings.heartbeat_timeout_s, startup_window_s=model.settings.startup_window_s,
                    small_stop_threshold_s=model.settings.small_stop_threshold_s,
                    known_reasons=frozenset(r.code for c in model.reasons for r in c.reasons),
                )
    return PlantContext(model, ctx, {c.id: c for c in ctx.values()})


def floor_local_hour(t: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    loc = t.astimezone(tz)
    return loc.replace(minute=0, second=0, microsecond=0).astimezone(UTC)


# --- reading raw events ------------------------------------------------------------------------------


@dataclass
class RawSlice:
    initial_state: int | None
    startup_since: dt.datetime | None
    state_ts: list[dt.datetime]
    state_codes: list[int]
    count_ts: list[dt.datetime]
    count_total: list[int]
    count_reject: list[int]
    count_ideal: list[float]


# Each machine's look-backs in one statement (unnest + lateral, in the order given): on a hypertable a
# statement per machine costs a plan over every chunk each, far more than the look-up itself. The bounds
# common to all rows (the first two parameters) repeat what each row asks for, as constants the planner
# can use to leave out the chunks outside them.
_BEFORE_MANY = (
    "select b.ts, b.state from unnest(%s::int[], %s::timestamptz[]) with ordinality i (machine, at, n) "
    "left join lateral (select ts, state from state_events s where s.machine = i.machine and s.ts <= i.at "
    "and s.ts > %s and s.ts <= %s order by s.ts desc, s.key desc limit 1) b on true order by i.n"
)
# How far back the first look for the state before a window goes (then, for machines with no event in
# it, without a bound): a plan over a day's chunks, not the whole history's.
_BEFORE_FIRST_LOOK = dt.timedelta(days=1)
_STATES_MANY = ("select machine, ts, state from state_events where machine = any(%s) and ts > %s and ts < %s "
                "order by machine, ts, key")
_COUNTS_MANY = ("select machine, ts, total, reject, product from count_events where machine = any(%s) "
                "and ts >= %s and ts < %s order by machine, ts")
# The last state change before each time `at` that either is not running or is at or before `since`
# (`at` less a startup window): the state the run holding at `at` started from, however long that state
# lasted (a setup of an hour, a weekend's planned stop), or a running event showing that the run began a
# whole startup window or more before `at`. Backwards from `at` it passes only the running events of
# the last startup window.
_PREV_STOP_MANY = (
    "select p.ts, p.state from unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) with ordinality "
    "i (machine, at, since, n) left join lateral (select ts, state from state_events s where s.machine = i.machine "
    "and s.ts < i.at and (s.state <> %s or s.ts <= i.since) and s.ts > %s and s.ts < %s "
    "order by s.ts desc, s.key desc limit 1) p on true order by i.n"
)
_RUN_START_MANY = (
    "select (select min(ts) from state_events s where s.machine = i.machine and s.ts > i.after and s.ts <= i.at "
    "and s.state = %s and s.ts > %s and s.ts <= %s) from unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) "
    "with ordinality i (machine, after, at, n) order by i.n"
)


_EVER = dt.datetime.min.replace(tzinfo=UTC)


def _look_back(look: Callable[[list[int], dt.datetime], list[tuple]], n: int, near: dt.datetime) -> list[tuple]:
    """The rows of a look-back for items 0..n-1 (`look(items, lower bound)`): first down to `near`, then
    without a bound for the items that found nothing there (their first column None)."""
    found = look(list(range(n)), near)
    missing = [i for i, row in enumerate(found) if row[0] is None]
    if missing:
        for i, row in zip(missing, look(missing, _EVER), strict=True):
            found[i] = row
    return found


def _states_before(conn: psycopg.Connection, nums: list[int], ats: list[dt.datetime]) -> list[tuple | None]:
    """(ts, state) of each machine's last state event at or before its time (None: there is none)."""
    if not nums:
        return []
    hi = max(ats)
    found = _look_back(lambda idx, lo: conn.execute(_BEFORE_MANY, (
        [nums[i] for i in idx], [ats[i] for i in idx], lo, hi)).fetchall(), len(nums), min(ats) - _BEFORE_FIRST_LOOK)
    return [None if row[0] is None else row for row in found]


def _run_starts_from(conn: psycopg.Connection, nums: list[int], ats: list[dt.datetime], sinces: list[dt.datetime]
                     ) -> list[dt.datetime | None]:
    """For machines running at their time `at`: when that run began, if it began after `since` (`at` less
    the startup window) from a state that starts a startup window (else None). The state it began from
    is the last non-running one before it however long ago (no state event at all: no data, offline)."""
    if not nums:
        return []
    hi = max(ats)
    prevs = _look_back(lambda idx, lo: conn.execute(_PREV_STOP_MANY, (
        [nums[i] for i in idx], [ats[i] for i in idx], [sinces[i] for i in idx], timeline.RUNNING, lo, hi)).fetchall(),
        len(nums), min(sinces) - _BEFORE_FIRST_LOOK)
    # From the non-running state before it (or the start of the data); a running event at or before
    # `since` means the run began a whole startup window before `at` or earlier.
    starting = {i: _EVER if prev[0] is None else prev[0] for i, prev in enumerate(prevs)
                if prev[0] is None or prev[1] in timeline.STARTUP_FROM}
    out: list[dt.datetime | None] = [None] * len(nums)
    if starting:
        afters, at_of = list(starting.values()), [ats[i] for i in starting]
        found = conn.execute(_RUN_START_MANY, (timeline.RUNNING, min(afters), max(at_of),
                                               [nums[i] for i in starting], afters, at_of)).fetchall()
        for i, row in zip(starting, found, strict=True):
            out[i] = row[0]
    return out


def read_slice(conn: psycopg.Connection, m: MachineContext, start: dt.datetime, end: dt.datetime) -> RawSlice:
    """Everything `timeline.integrate` needs for [start, end) of one machine."""
    return read_slices(conn, [(m, start, end)])[0]


def read_slices(conn: psycopg.Connection, items: list[tuple[MachineContext, dt.datetime, dt.datetime]]
                ) -> list[RawSlice]:
    """`read_slice` of several (machine, start, end) at once: the statements of all of them go out
    together (pipeline mode), so a few round trips instead of a handful per machine."""
    # Machines sharing a window (the usual live edge: every machine's last hour) read their states and
    # counts in one statement each; ordered by machine, so each machine's rows stay in their order.
    windows: dict[tuple[dt.datetime, dt.datetime], list[int]] = {}
    for i, (_, a, b) in enumerate(items):
        windows.setdefault((a, b), []).append(i)
    with conn.pipeline():
        shared = {w: (conn.execute(_STATES_MANY, ([items[i][0].num for i in idx], *w)),
                      conn.execute(_COUNTS_MANY, ([items[i][0].num for i in idx], *w)))
                  for w, idx in windows.items()}
        states_of: dict[int, list[tuple]] = {}
        counts_of: dict[int, list[tuple]] = {}
        for w, (cs, cc) in shared.items():
            num_to_i = {items[i][0].num: i for i in windows[w]}
            # Rows come ordered by machine: one run of rows per machine (rows keep the machine in front).
            for num, rows in itertools.groupby(cs.fetchall(), key=itemgetter(0)):
                states_of[num_to_i[num]] = list(rows)
            for num, rows in itertools.groupby(cc.fetchall(), key=itemgetter(0)):
                counts_of[num_to_i[num]] = list(rows)
        befores = _states_before(conn, [m.num for m, _, _ in items], [a for _, a, _ in items])
        got = [(before, states_of.get(i, []), counts_of.get(i, [])) for i, before in enumerate(befores)]
        # The running interval holding at `start` began at the first running event after the last
        # non-running one; it is a startup if that non-running state was one that starts a window. A
        # machine whose last state event is a startup window or more before `start` has run all along
        # since: no look-up (a machine running steadily).
        running = [i for i, ((m, a, _), (before, _, _)) in enumerate(zip(items, got, strict=True))
                   if before is not None and before[1] == timeline.RUNNING and m.startup_window_s > 0
                   and before[0] > a - dt.timedelta(seconds=m.startup_window_s)]
        run_starts = dict(zip(running, _run_starts_from(
            conn, [items[i][0].num for i in running], [items[i][1] for i in running],
            [items[i][1] - dt.timedelta(seconds=items[i][0].startup_window_s) for i in running]), strict=True))
    out = []
    for i, ((m, _, _), (before, states, counts)) in enumerate(zip(items, got, strict=True)):
        # Ideal cycle time per product, looked up once per product rather than once per count.
        ideal = {product: m.ideal_for(product) for product in {r[4] for r in counts}}
        out.append(RawSlice(
            initial_state=before[1] if before else None,
            startup_since=run_starts.get(i),
            state_ts=[r[1] for r in states],
            state_codes=[r[2] for r in states],
            count_ts=[r[1] for r in counts],
            count_total=[r[2] for r in counts],
            count_reject=[r[3] for r in counts],
            count_ideal=[r[2] * ideal[r[4]] for r in counts],
        ))
    return out


def horizon_of(conn: psycopg.Connection, m: MachineContext) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(last data seen, horizon after which the machine is 'no data')."""
    row = conn.execute("select ts from machine_last_seen where machine = %s", (m.num,)).fetchone()
    if row is None:
        return None, None
    return row[0], row[0] + dt.timedelta(seconds=m.heartbeat_s)


def horizons_of(conn: psycopg.Connection, ms: list[MachineContext]
                ) -> dict[int, tuple[dt.datetime | None, dt.datetime | None]]:
    """`horizon_of` of several machines in one statement."""
    seen = dict(conn.execute("select machine, ts from machine_last_seen where machine = any(%s)",
                             ([m.num for m in ms],)).fetchall())
    return {m.num: (seen[m.num], seen[m.num] + dt.timedelta(seconds=m.heartbeat_s)) if m.num in seen
            else (None, None) for m in ms}


def compute_periods(
    conn: psycopg.Connection, m: MachineContext, start: dt.datetime, end: dt.datetime,
    horizon: dt.datetime | None, grid: list[timeline.Period] | None = None,
) -> list[tuple]:
    """Rollup-shaped rows for [start, end) computed from raw events."""
    return compute_periods_many(conn, [(m, start, end, horizon)], None if grid is None else [grid])[0]


def compute_periods_many(
    conn: psycopg.Connection, items: list[tuple[MachineContext, dt.datetime, dt.datetime, dt.datetime | None]],
    grids: list[list[timeline.Period]] | None = None,
) -> list[list[tuple]]:
    """`compute_periods` of several (machine, start, end, horizon), their raw events read together."""
    grids = grids or [timeline.period_grid(m.calendar, m.tz, a, b) for m, a, b, _ in items]
    todo = [i for i, grid in enumerate(grids) if grid]
    raws = read_slices(conn, [items[i][:3] for i in todo])  # type: ignore[misc]
    spans = stop_class_spans_many(conn, [items[i] for i in todo])
    out: list[list[tuple]] = [[] for _ in items]
    n = timeline.N_STATES
    for i, raw, stops in zip(todo, raws, spans, strict=True):
        m, horizon, grid = items[i][0], items[i][3], grids[i]
        sums = timeline.integrate(
            grid, raw.state_ts, raw.state_codes, raw.initial_state, horizon, raw.count_ts, raw.count_total,
            raw.count_reject, raw.count_ideal, m.startup_window_s, raw.startup_since,
        )
        classes = timeline.integrate_spans(grid, stops, len(timeline.STOP_CLASSES))
        out[i] = [
            (m.num, p.start, p.end, p.calendar_kind, p.shift_key, *map(float, row[:n]), int(row[n]),
             int(row[n + 1]), int(row[n + 2]), float(row[n + 3]), *map(float, cls))
            for p, row, cls in zip(grid, sums, classes, strict=True)
        ]
    return out


_STOPS = """
    select d.machine, d.start_ts, d.end_ts, d.state, r.planned
    from downtime d left join reasons r on r.code = coalesce(d.reason_code, d.auto_reason)
    where d.machine = any(%s) and d.start_ts < %s and (d.end_ts is null or d.end_ts > %s)
    order by d.machine, d.start_ts
"""


def stop_class_spans(conn: psycopg.Connection, m: MachineContext, start: dt.datetime, end: dt.datetime,
                     horizon: dt.datetime | None) -> list[tuple[dt.datetime, dt.datetime, int]]:
    """The stops overlapping [start, end) as (start, end, class) spans, classified by their effective
    reason (manual, else automatic) and full duration; an ongoing stop ends at the horizon."""
    return stop_class_spans_many(conn, [(m, start, end, horizon)])[0]


def stop_class_spans_many(
    conn: psycopg.Connection, items: list[tuple[MachineContext, dt.datetime, dt.datetime, dt.datetime | None]],
) -> list[list[tuple[dt.datetime, dt.datetime, int]]]:
    """`stop_class_spans` of several (machine, start, end, horizon), read together (pipeline mode)."""
    windows: dict[tuple[dt.datetime, dt.datetime], list[int]] = {}
    for i, (_, start, end, _) in enumerate(items):
        windows.setdefault((start, end), []).append(i)
    rows_of: dict[int, list[tuple]] = {}
    with conn.pipeline():
        curs = {w: conn.execute(_STOPS, ([items[i][0].num for i in idx], w[1], w[0])) for w, idx in windows.items()}
        for w, cur in curs.items():
            num_to_i = {items[i][0].num: i for i in windows[w]}
            for r in cur.fetchall():
                rows_of.setdefault(num_to_i[r[0]], []).append(r[1:])
    out = []
    for i, (m, _, _, horizon) in enumerate(items):
        spans = []
        for a, b, state, planned in rows_of.get(i, []):
            if b is None:
                if horizon is None:
                    continue
                b = horizon
            if b <= a:
                continue
            cls = timeline.stop_class(state, planned, (b - a).total_seconds(), m.small_stop_threshold_s)
            spans.append((a, b, cls))
        out.append(spans)
    return out


# --- refresh -----------------------------------------------------------------------------------------


@dataclass
class RefreshStats:
    machines: int = 0
    periods_written: int = 0
    stops_written: int = 0


def refresh(conn: psycopg.Connection, ctx: PlantContext | None = None, now: dt.datetime | None = None) -> RefreshStats:
    """Bring rollups and downtime up to date for every machine that has new or dirty data."""
    ctx = ctx or load_context(conn)
    now = now or dt.datetime.now(UTC)
    stats = RefreshStats()
    todo = conn.execute(
        """
        select s.machine, w.covered_to, s.ts, exists (select 1 from rollup_dirty d where d.machine = s.machine)
        from machine_last_seen s left join rollup_watermarks w on w.machine = s.machine
        where exists (select 1 from rollup_dirty d where d.machine = s.machine)
           or w.covered_to is null or w.covered_to < s.ts
        """
    ).fetchall()
    conn.commit()
    for num, covered_to, last_seen, dirty in todo:
        m = ctx.machines.get(num)
        if m is None:
            continue
        if not dirty and covered_to is not None and floor_local_hour(min(last_seen, now), m.tz) <= covered_to:
            # Data arrived since the watermark but the hour it is in has not ended: nothing to write yet
            # (the usual case every few seconds for every live machine; queries compute that hour live).
            continue
        with conn.transaction():
            # Claim the dirty ranges first: ranges marked while we compute stay for the next round.
            claimed = conn.execute(
                "delete from rollup_dirty where machine = %s returning from_ts", (num,)
            ).fetchall()
            dirty_from = min((r[0] for r in claimed), default=None)
            stats.machines += 1
            first = _first_event(conn, num)
            if first is None:
                continue
            # Stops first: the rollups classify stop seconds by the stops' reasons and durations.
            if dirty_from is not None:
                stats.stops_written += _refresh_downtime(conn, m, first, dirty_from, last_seen)
                # A stop whose end arrived now may change class (small -> breakdown) back to its start.
                stop_start = conn.execute(
                    "select min(start_ts) from downtime where machine = %s and start_ts <= %s "
                    "and (end_ts is null or end_ts >= %s)",
                    (num, dirty_from, dirty_from),
                ).fetchone()[0]
                if stop_start is not None and stop_start < dirty_from:
                    dirty_from = stop_start
            stats.periods_written += _refresh_rollups(conn, m, first, covered_to, last_seen, dirty_from, now)
    return stats


def _first_event(conn: psycopg.Connection, num: int) -> dt.datetime | None:
    a = conn.execute("select min(ts) from state_events where machine = %s", (num,)).fetchone()[0]
    b = conn.execute("select min(ts) from count_events where machine = %s", (num,)).fetchone()[0]
    return min((t for t in (a, b) if t is not None), default=None)


def _refresh_rollups(conn: psycopg.Connection, m: MachineContext, first: dt.datetime,
                     covered_to: dt.datetime | None, last_seen: dt.datetime, dirty_from: dt.datetime | None,
                     now: dt.datetime) -> int:
    new_cov = floor_local_hour(min(last_seen, now), m.tz)
    candidates = [t for t in (covered_to, dirty_from) if t is not None]
    # Nothing exists before the first event, so a "from the beginning" mark starts there.
    start = floor_local_hour(max(min(candidates) if candidates else first, first), m.tz)
    end = max(new_cov, covered_to or new_cov)
    if end <= start:
        return 0
    horizon = last_seen + dt.timedelta(seconds=m.heartbeat_s)
    rows = compute_periods(conn, m, start, end, horizon)
    conn.execute(
        "delete from machine_rollups where machine = %s and period_start >= %s and period_start < %s",
        (m.num, start, end),
    )
    if rows:
        with conn.cursor() as cur, cur.copy(
            f"copy machine_rollups ({', '.join(ROLLUP_COLUMNS)}) from stdin"
        ) as copy:
            for r in rows:
                copy.write_row(r)
    refresh_daily(conn, m, start, end)
    conn.execute(
        "insert into rollup_watermarks (machine, covered_to) values (%s, %s) on conflict (machine) do update "
        "set covered_to = greatest(rollup_watermarks.covered_to, excluded.covered_to)",
        (m.num, end),
    )
    return len(rows)


def local_day(t: dt.datetime, tz: ZoneInfo) -> dt.date:
    return t.astimezone(tz).date()


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """Start of a local day in UTC (zoneinfo's fold=0 reading, as andon.calendar and analytics.buckets)."""
    return dt.datetime.combine(day, dt.time()).replace(tzinfo=tz).astimezone(UTC)


def refresh_daily(conn: psycopg.Connection, m: MachineContext, start: dt.datetime, end: dt.datetime) -> int:
    """Rewrite the day rows of every local day that [start, end) touches from that machine's periods.

    Call it in the transaction that rewrote the periods: the day rows are sums of the whole day's stored
    periods (also those outside [start, end)), so running it again gives the same rows."""
    first, last = local_day(start, m.tz), local_day(end - dt.timedelta(microseconds=1), m.tz)
    conn.execute("delete from machine_rollups_daily where machine = %s and day >= %s and day <= %s",
                 (m.num, first, last))
    sums = ", ".join(f"sum({c})" for c in SUM_COLUMNS)
    cur = conn.execute(
        f"""
        insert into machine_rollups_daily (machine, day, {', '.join(STORED_DAILY_COLUMNS[1:])})
        select machine, (period_start at time zone %(tz)s)::date, min(period_start), max(period_end),
               calendar_kind, {sums}, sum(extract(epoch from period_end - period_start))::float8
        from machine_rollups
        where machine = %(m)s and period_start >= %(a)s and period_start < %(b)s
        group by machine, (period_start at time zone %(tz)s)::date, calendar_kind
        """,
        {"tz": m.tz.key, "m": m.num, "a": local_midnight(first, m.tz),
         "b": local_midnight(last + dt.timedelta(days=1), m.tz)},
    )
    return cur.rowcount


def _refresh_downtime(conn: psycopg.Connection, m: MachineContext, first: dt.datetime, dirty_from: dt.datetime,
                      last_seen: dt.datetime) -> int:
    # Re-derive every stop from the start of the latest stop that began at or before the earliest dirty
    # instant: a stop's start is always a state change, so deriving from there is exact.
    # (A stop part that begins at a manual split point does not begin at a state change: skip those.)
    latest_stop = conn.execute(
        "select max(start_ts) from downtime d where machine = %s and start_ts <= %s and not exists "
        "(select 1 from downtime_splits s where s.machine = d.machine and s.at = d.start_ts)",
        (m.num, dirty_from),
    ).fetchone()[0]
    start = latest_stop or first
    # Start from the state change that opened the stop at `start` (or earlier same-state events).
    rows = conn.execute(
        "select ts, state, fault_code, reason_code from state_events where machine = %s and ts >= %s "
        "order by ts, key",
        (m.num, start),
    ).fetchall()
    horizon = last_seen + dt.timedelta(seconds=m.heartbeat_s)
    splits = [r[0] for r in conn.execute(
        "select at from downtime_splits where machine = %s and at > %s", (m.num, start)).fetchall()]
    derived = timeline.derive_stops(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], horizon, splits
    )
    existing = {
        r[0]: r
        for r in conn.execute(
            "select start_ts, end_ts, reason_code, comment, set_by, set_at, id from downtime "
            "where machine = %s and start_ts >= %s",
            (m.num, start),
        ).fetchall()
    }
    new_starts = {s.start for s in derived}
    # Stops that no longer exist hand their manual reason to the stop that now covers their start.
    carried: dict[dt.datetime, tuple] = {}
    for st, row in existing.items():
        if st in new_starts or row[2] is None:
            continue
        for s in derived:
            if s.start <= st and (s.end is None or st < s.end) and s.start not in carried:
                carried[s.start] = row
                break
    for st, row in existing.items():
        if st not in new_starts:
            conn.execute("delete from downtime where id = %s", (row[6],))
            conn.execute(
                "insert into downtime_audit (downtime_id, machine, start_ts, by, action, old_value) "
                "values (%s, %s, %s, 'system', 'rederived', %s)",
                (row[6], m.num, st, Jsonb({"reason_code": row[2], "comment": row[3], "end_ts": str(row[1])})),
            )
    with conn.cursor() as cur:
        cur.executemany(
            """
            insert into downtime (machine, start_ts, end_ts, state, fault_code, auto_reason)
            values (%s, %s, %s, %s, %s, %s)
            on conflict (machine, start_ts) do update set end_ts = excluded.end_ts, state = excluded.state,
                fault_code = excluded.fault_code, auto_reason = excluded.auto_reason
            """,
            [(m.num, s.start, s.end, s.state, s.fault_code, timeline.map_fault(m.fault_map, s.fault_code,
                                                                               s.reason_code, m.known_reasons))
             for s in derived],
        )
    for start_ts, old in carried.items():
        if start_ts not in existing:
            conn.execute(
                "update downtime set reason_code = %s, comment = %s, set_by = %s, set_at = %s "
                "where machine = %s and start_ts = %s and reason_code is null",
                (old[2], old[3], old[4], old[5], m.num, start_ts),
            )
    return len(derived)
