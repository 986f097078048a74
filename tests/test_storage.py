"""Storage on a real TimescaleDB: migrations, idempotent ingest, rollups equal to the raw data, late data,
downtime derivation with manual reasons that survive re-derivation."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from andon.events import STATE_CODES, MachineState, ProductionCount, StateChange, TelemetrySample
from andon.plant import load_plant_model
from andon.storage import db, plant_sync, queries, rollups, timeline
from andon.storage.writer import EventWriter
from api import service
from tests.pgcluster import TempCluster

UTC = dt.UTC
T0 = dt.datetime(2026, 10, 22, 0, 0, tzinfo=UTC)  # spans the Berlin DST change of 2026-10-25
STATES = [s for s in MachineState if s is not MachineState.OFFLINE]
SECONDS_COLS = [f"s_{s.value}" for s in MachineState]


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def _write(url: str, events: list) -> None:
    pool = db.make_pool(url)
    try:
        EventWriter(pool).write(events)
    finally:
        pool.close()


# --- migrations ------------------------------------------------------------------------------------


def test_migrations_from_empty_and_rerun(empty_db_url):
    first = db.upgrade(empty_db_url, create_db=False)
    assert any(line.startswith("applied 0001_foundation") for line in first)
    assert db.upgrade(empty_db_url, create_db=False) == []
    with psycopg.connect(empty_db_url) as conn:
        db.check_schema(conn)
        hypertables = {r[0] for r in conn.execute("select hypertable_name from timescaledb_information.hypertables")}
        assert {"state_events", "count_events", "telemetry"} <= hypertables
        rows = dict(conn.execute("select version, status from schema_migrations").fetchall())
        licensed = db.licensed_features(conn)
        for mig in db.load_migrations():
            expected = "skipped" if mig.license == "timescale" and not licensed else "applied"
            assert rows[mig.version] == expected, mig
        # telemetry_hourly exists on either edition (continuous aggregate or plain view).
        conn.execute("select bucket, machine, metric, n, mean, min, max, stddev from telemetry_hourly limit 1")


def test_edited_migration_is_refused(empty_db_url):
    db.upgrade(empty_db_url, create_db=False)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("update schema_migrations set checksum = 'tampered' where version = 1")
    with pytest.raises(db.DatabaseError, match="changed after it was applied"):
        db.upgrade(empty_db_url, create_db=False)


def test_unreachable_database_message():
    with pytest.raises(db.DatabaseError, match="andon services up"):
        db.connect("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=2)


@pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(), reason="needs Debian's PostgreSQL")
def test_server_without_timescaledb_loaded_gets_a_clear_message():
    """A second, real PostgreSQL cluster started without timescaledb in shared_preload_libraries."""
    cluster = TempCluster(preload_timescaledb=False)
    try:
        with pytest.raises(db.DatabaseError, match="not loaded: add timescaledb to shared_preload_libraries"):
            db.upgrade(cluster.url)
    finally:
        cluster.destroy()


# --- idempotent ingest ---------------------------------------------------------------------------------


def _random_events(machine: str, seed: int, days: float, start: dt.datetime = T0) -> list:
    rnd = random.Random(seed)
    out: list = []
    t = 0.0
    while t < days * 86400:
        out.append(StateChange(machine, start + dt.timedelta(seconds=t), rnd.choice(STATES), "test",
                               fault_code=rnd.choice([None, "E12", "JAM", "E31"])))
        for _ in range(rnd.randint(0, 3)):
            total = rnd.randint(1, 5)
            out.append(ProductionCount(machine, start + dt.timedelta(seconds=t + rnd.uniform(0, 600)), total,
                                       rnd.randint(0, total), "test", product=rnd.choice([None, "A", "B"])))
        out.append(TelemetrySample(machine, start + dt.timedelta(seconds=t), "vibration_rms", rnd.random(), "test",
                                   unit="mm/s"))
        t += rnd.choice([rnd.uniform(5, 60), rnd.uniform(60, 1800), rnd.uniform(1800, 7200)])
    return out


def _table_counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    return tuple(
        conn.execute(f"select count(*) from {t}").fetchone()[0] for t in ("state_events", "count_events", "telemetry")
    )  # type: ignore[return-value]


def test_same_batch_twice_is_stored_once(fresh_db_url):
    pool = db.make_pool(fresh_db_url)
    try:
        writer = EventWriter(pool)
        events = _random_events("L1-M1", 1, 1.0)
        first = writer.write(events)
        assert first.duplicates == 0 and first.total_inserted == len(events)
        with psycopg.connect(fresh_db_url) as conn:
            before = _table_counts(conn)
        again = writer.write(events)
        assert again.total_inserted == 0 and again.duplicates == len(events)
        # A batch half old, half new stores only the new half; duplicates inside one batch count once.
        more = _random_events("L1-M1", 2, 0.5, start=T0 + dt.timedelta(days=2))
        mixed = writer.write(events[: len(events) // 2] + more + more[:10])
        assert mixed.total_inserted == len(more)
        with psycopg.connect(fresh_db_url) as conn:
            after = _table_counts(conn)
        assert sum(before) == len(events)
        assert sum(after) == len(events) + len(more)
        unknown = writer.write([StateChange("no-such-machine", T0, MachineState.RUNNING, "test")])
        assert unknown.total_inserted == 0 and "unknown machine" in unknown.rejected[0][1]
    finally:
        pool.close()


def test_last_counters_for_collector_restart(fresh_db_url):
    pool = db.make_pool(fresh_db_url)
    try:
        writer = EventWriter(pool)
        writer.write([
            ProductionCount("L1-M2", at(10), 5, 1, "plc-a", total_counter=105, reject_counter=3),
            ProductionCount("L1-M2", at(20), 5, 0, "plc-a", total_counter=110, reject_counter=3),
            ProductionCount("L1-M2", at(30), 2, 0, "plc-b", total_counter=7, reject_counter=0),
        ])
        with psycopg.connect(fresh_db_url) as conn:
            assert queries.last_counters(conn, "plc-a") == [("L1-M2", 110, 3, at(20))]
    finally:
        pool.close()


# --- rollups against an independent computation ------------------------------------------------------


def _brute_force(events: list, start: dt.datetime, end: dt.datetime, periods, horizon: dt.datetime,
                 ideal: dict) -> dict:
    """Per period sums from the events by plain interval clipping (a different algorithm from storage's)."""
    states = sorted((e for e in events if isinstance(e, StateChange)), key=lambda e: (e.ts, e.key))
    timeline: list[tuple[dt.datetime, dt.datetime, str]] = []
    for i, e in enumerate(states):
        a = e.ts
        b = states[i + 1].ts if i + 1 < len(states) else end
        b = min(b, horizon)
        if b > a:
            timeline.append((a, b, e.state.value))
    if states and states[0].ts > start:
        timeline.insert(0, (start, states[0].ts, "offline"))
    if horizon < end:
        timeline.append((max(horizon, start), end, "offline"))
    out = {}
    for p in periods:
        secs = dict.fromkeys(SECONDS_COLS, 0.0)
        for a, b, s in timeline:
            lo, hi = max(a, p.period_start), min(b, p.period_end)
            if hi > lo:
                secs[f"s_{s}"] += (hi - lo).total_seconds()
        total = reject = 0
        ideal_time = 0.0
        for e in events:
            if isinstance(e, ProductionCount) and p.period_start <= e.ts < p.period_end:
                total += e.total
                reject += e.reject
                ideal_time += e.total * ideal.get(e.product, ideal[None])
        out[p.period_start] = (secs, total, reject, ideal_time)
    return out


def _check_against_brute_force(conn, ctx, events, start, end, now):
    df = queries.periods(conn, ctx, ["L1-M2"], start, end, now=now)
    last = max(e.ts for e in events)
    horizon = min(last + dt.timedelta(seconds=ctx.by_id["L1-M2"].heartbeat_s), now)
    ideal = {None: 54.0, "A": 54.0, "B": 57.0}
    expected = _brute_force(events, start, end, list(df.itertuples()), horizon, ideal)
    assert df["period_start"].iloc[0] == start and df["period_end"].iloc[-1] == end
    assert (df["period_start"].iloc[1:].to_numpy() == df["period_end"].iloc[:-1].to_numpy()).all()
    for row in df.itertuples():
        secs, total, reject, ideal_time = expected[row.period_start]
        for col in SECONDS_COLS:
            assert getattr(row, col) == pytest.approx(secs[col], abs=1e-3), (row.period_start, col)
        assert (row.total_count, row.reject_count) == (total, reject)
        assert row.ideal_time_s == pytest.approx(ideal_time)
        stop_secs = row.s_idle + row.s_planned_stop + row.s_setup + row.s_unplanned_stop
        assert row.s_stop_planned + row.s_stop_small + row.s_stop_breakdown == pytest.approx(stop_secs, abs=1e-3)
        length = (row.period_end - row.period_start).total_seconds()
        assert sum(getattr(row, c) for c in SECONDS_COLS) == pytest.approx(length, abs=1e-3)
    return df


_SUMS = [*SECONDS_COLS, "total_count", "reject_count", "startup_rejects", "ideal_time_s", "s_stop_planned",
         "s_stop_small", "s_stop_breakdown"]


def _daily_rows(conn) -> dict:
    """The stored day grain, keyed by (machine, day, calendar kind)."""
    rows = conn.execute(
        f"select machine, day, calendar_kind, period_start, period_end, period_s, {', '.join(_SUMS)} "
        "from machine_rollups_daily"
    ).fetchall()
    return {r[:3]: r[3:] for r in rows}


def _assert_daily_equals_hourly(conn) -> dict:
    """Every stored day row is the sum of that local day's stored periods, and every day with periods has
    its rows: the day grain never drifts from the hourly rollups."""
    expected = conn.execute(
        f"select machine, (period_start at time zone 'Europe/Berlin')::date, calendar_kind, "
        f"min(period_start), max(period_end), sum(extract(epoch from period_end - period_start))::float8, "
        f"{', '.join(f'sum({c})' for c in _SUMS)} from machine_rollups group by 1, 2, 3"
    ).fetchall()
    stored = _daily_rows(conn)
    assert set(stored) == {r[:3] for r in expected}
    for r in expected:
        got = stored[r[:3]]
        assert got[:2] == r[3:5], r[:3]
        assert got[2:] == pytest.approx(r[5:], abs=1e-6), r[:3]
    return stored


def _by_local_day(df):
    """Sums per machine, local day and calendar kind of any grain's rows."""
    key = df["period_start"].dt.tz_convert("Europe/Berlin").dt.date.rename("day")
    return df.groupby([df["machine"], key, df["calendar_kind"]])[_SUMS].sum()


def _assert_day_grain_equals_fine(conn, ctx, machine, a, b, now):
    """grain="day" (stored day rows inside, periods and live raw data at the edges) sums per local day to
    exactly what the fine periods give over the same window."""
    fine = queries.periods(conn, ctx, [machine], a, b, now=now)
    coarse = queries.periods(conn, ctx, [machine], a, b, now=now, grain="day")
    assert coarse["period_s"].sum() == pytest.approx((b - a).total_seconds())
    assert coarse["period_start"].min() == fine["period_start"].min() == a
    x, y = _by_local_day(fine), _by_local_day(coarse)
    assert list(x.index) == list(y.index)
    for c in _SUMS:
        assert y[c].to_numpy() == pytest.approx(x[c].to_numpy(), abs=1e-6), c
    return coarse


def test_day_grain_migration_merges_shift_rows(empty_db_url, demo_plant, monkeypatch):
    """0014 turns day rows per (machine, day, calendar kind, shift) into one per (machine, day, calendar
    kind) with the same sums: a database holding 0013's rows reads the same after the upgrade."""
    every = db.load_migrations()
    monkeypatch.setattr(db, "load_migrations", lambda: [m for m in every if m.version < 14])
    db.upgrade(empty_db_url, create_db=False)
    with psycopg.connect(empty_db_url) as conn:
        plant_sync.sync_plant_model(conn, demo_plant, "file:config/plant.yaml")
        conn.commit()
    _write(empty_db_url, _random_events("L1-M2", 3, 3.0))
    with psycopg.connect(empty_db_url) as conn:
        rollups.refresh(conn, now=T0 + dt.timedelta(days=30))
        # The day rows as 0013 grouped them (per shift too), from its own statement.
        conn.execute("delete from machine_rollups_daily")
        conn.execute(next(m for m in every if m.version == 13).text.rsplit(";", 2)[-2])  # type: ignore[arg-type]
        conn.commit()
        per_shift = conn.execute("select count(*) from machine_rollups_daily").fetchone()[0]
    monkeypatch.setattr(db, "load_migrations", lambda: every)
    assert db.upgrade(empty_db_url, create_db=False) == ["applied 0014_daily_grain_per_calendar_kind"]
    with psycopg.connect(empty_db_url) as conn:
        merged = _assert_daily_equals_hourly(conn)
    assert per_shift > len(merged) > 0


def test_rollups_equal_raw_data_and_any_window_adds_up(fresh_db_url):
    events = _random_events("L1-M2", 7, 5.0)
    _write(fresh_db_url, events)
    now = T0 + dt.timedelta(days=30)
    with psycopg.connect(fresh_db_url) as conn:
        ctx = rollups.load_context(conn)
        stats = rollups.refresh(conn, ctx, now=now)
        conn.commit()
        assert stats.periods_written > 100
        stored = conn.execute("select count(*) from machine_rollups").fetchone()[0]
        assert stored == stats.periods_written
        # Whole window (mostly stored rollups) and odd windows whose edges cut periods (live edges).
        full = _check_against_brute_force(conn, ctx, events, T0, T0 + dt.timedelta(days=6), now)
        odd = _check_against_brute_force(
            conn, ctx, events, T0 + dt.timedelta(hours=13, minutes=7, seconds=11), T0 + dt.timedelta(days=3, minutes=3),
            now,
        )
        assert len(odd) > 50
        # A day equals the sum of its hours, and a split window equals the whole.
        day0 = T0 + dt.timedelta(days=1)
        day = queries.periods(conn, ctx, ["L1-M2"], day0, day0 + dt.timedelta(days=1), now=now)
        hours = [queries.periods(conn, ctx, ["L1-M2"], day0 + dt.timedelta(hours=h),
                                 day0 + dt.timedelta(hours=h + 1), now=now) for h in range(24)]
        cols = [*SECONDS_COLS, "total_count", "reject_count", "ideal_time_s"]
        summed = sum(h[cols].sum() for h in hours)
        for c in cols:
            assert day[c].sum() == pytest.approx(summed[c], abs=1e-6)
        assert full[cols].sum()["total_count"] == sum(e.total for e in events if isinstance(e, ProductionCount))
        # The stored day grain is the hourly rollups summed per local day; read back through grain="day"
        # (whole days stored, the edges of a window cut mid-day from periods and raw data) it sums per day
        # to the fine periods, which match the brute force above.
        daily = _assert_daily_equals_hourly(conn)
        assert len(daily) < stats.periods_written / 3
        for a, b in ((T0, T0 + dt.timedelta(days=6)), (odd.period_start.iloc[0], odd.period_end.iloc[-1]),
                     (T0 + dt.timedelta(days=2, hours=5, seconds=1), T0 + dt.timedelta(days=3, hours=1))):
            _assert_day_grain_equals_fine(conn, ctx, "L1-M2", a, b, now)
        # Refresh again: nothing to do, the same day rows (idempotent), also when a day is rewritten.
        rollups.refresh(conn, ctx, now=now)
        m2 = ctx.by_id["L1-M2"]
        rollups.refresh_daily(conn, m2, T0 + dt.timedelta(days=1, hours=3), T0 + dt.timedelta(days=3))
        conn.commit()
        assert _assert_daily_equals_hourly(conn) == daily
        # Coarser stored rows (per day, per shift) give the same sums and the same OEE.
        a, b = odd.period_start.iloc[0], odd.period_end.iloc[-1]
        for grain in ("day", "shift"):
            coarse = queries.periods(conn, ctx, ["L1-M2"], a, b, now=now, grain=grain)
            assert len(coarse) < len(odd) / 3
            assert coarse["period_s"].sum() == pytest.approx((b - a).total_seconds())
            for c in cols:
                assert coarse[c].sum() == pytest.approx(odd[c].sum(), abs=1e-6), (grain, c)
            if grain == "shift":  # (day rows are per calendar kind only: see _assert_daily_equals_hourly)
                assert coarse.loc[coarse["calendar_kind"] == "production", "shift_key"].notna().all()
        # The rollups' stop classes agree with the analytics core classifying the stop list itself.
        import analytics
        from analytics.ledger import PRECLASSIFIED_COLUMNS

        policy = analytics.OeePolicy.from_settings(ctx.model.settings)
        for frame, (a, b) in ((full, (T0, T0 + dt.timedelta(days=6))),
                              (odd, (odd.period_start.iloc[0], odd.period_end.iloc[-1]))):
            stop_frame = queries.stops(conn, ctx, ["L1-M2"], a, b)
            from_stops = analytics.compute_oee(frame.drop(columns=list(PRECLASSIFIED_COLUMNS)), stop_frame, policy, now)
            from_rollups = analytics.compute_oee(frame, None, policy, now)
            for name, value in from_stops.totals.to_dict().items():
                assert getattr(from_rollups.totals, name) == pytest.approx(value, abs=1e-3), name


def test_late_out_of_order_events_correct_rollups_and_stops(fresh_db_url):
    events = _random_events("L1-M2", 11, 3.0)
    pool = db.make_pool(fresh_db_url)
    now = T0 + dt.timedelta(days=10)
    try:
        writer = EventWriter(pool)
        writer.write(events)
        with psycopg.connect(fresh_db_url) as conn:
            ctx = rollups.load_context(conn)
            rollups.refresh(conn, ctx, now=now)
            conn.commit()
            # A late stop in the middle of history, and late parts: rollups and stops must move.
            late = [
                StateChange("L1-M2", at(86400 + 1234.5), MachineState.UNPLANNED_STOP, "late", fault_code="E31"),
                StateChange("L1-M2", at(86400 + 1234.5 + 777), MachineState.RUNNING, "late"),
                ProductionCount("L1-M2", at(86400 + 2000), 40, 2, "late"),
            ]
            before = _assert_daily_equals_hourly(conn)
            writer.write(late)
            queries.ensure_fresh(conn, ctx, now=now)
            _check_against_brute_force(conn, ctx, events + late, T0, T0 + dt.timedelta(days=4), now)
            # The late data dirtied an old day: its day rows were rewritten with the periods, in step.
            after = _assert_daily_equals_hourly(conn)
            late_day = at(86400 + 1234.5).astimezone(ZoneInfo("Europe/Berlin")).date()
            changed = {k[1] for k in set(before) | set(after) if before.get(k) != after.get(k)}
            assert late_day in changed
            for a, b in ((T0, T0 + dt.timedelta(days=4)),
                         (T0 + dt.timedelta(hours=9, minutes=30), T0 + dt.timedelta(days=2, hours=2, seconds=7))):
                _check_against_brute_force(conn, ctx, events + late, a, b, now)
                _assert_day_grain_equals_fine(conn, ctx, "L1-M2", a, b, now)
            stop = conn.execute(
                "select end_ts, auto_reason from downtime where start_ts = %s", (at(86400 + 1234.5),)
            ).fetchone()
            assert stop == (at(86400 + 1234.5 + 777), "tool-break")  # E31 -> "E3*" in L1-M2's fault map
    finally:
        pool.close()


def test_downtime_from_states_with_manual_reason_kept_on_rederivation(fresh_db_url):
    pool = db.make_pool(fresh_db_url)
    now = T0 + dt.timedelta(days=1)
    try:
        writer = EventWriter(pool)
        writer.write([
            StateChange("L1-M1", at(0), MachineState.RUNNING, "t"),
            StateChange("L1-M1", at(100), MachineState.UNPLANNED_STOP, "t", fault_code="E17"),
            StateChange("L1-M1", at(160), MachineState.UNPLANNED_STOP, "t", fault_code="E99"),  # same stop
            StateChange("L1-M1", at(400), MachineState.RUNNING, "t"),
            StateChange("L1-M1", at(500), MachineState.SETUP, "t", reason_code="changeover"),
            StateChange("L1-M1", at(900), MachineState.STARVED, "t"),  # line loss: not a stop of M1
            StateChange("L1-M1", at(1000), MachineState.RUNNING, "t"),
        ])
        with psycopg.connect(fresh_db_url) as conn:
            ctx = rollups.load_context(conn)
            queries.ensure_fresh(conn, ctx, now=now)
            df = queries.stops(conn, ctx, ["L1-M1"], T0, now)
            assert list(zip(df.start_ts, df.end_ts, df.state, df.reason_code, df.fault_code, strict=True)) == [
                (at(100), at(400), "unplanned_stop", "motor-overload", "E17"),
                (at(500), at(900), "setup", "changeover", None),
            ]
            conn.execute(
                "update downtime set reason_code = 'bearing-failure', set_by = 'alice', set_at = now() "
                "where start_ts = %s", (at(100),)
            )
            conn.commit()
            # A late event splits the first stop's start: the manual reason follows its stop.
            writer.write([StateChange("L1-M1", at(90), MachineState.UNPLANNED_STOP, "t", fault_code="E17")])
            queries.ensure_fresh(conn, ctx, now=now)
            df = queries.stops(conn, ctx, ["L1-M1"], T0, now)
            first = df.iloc[0]
            assert (first.start_ts, first.reason_code, first.set_by, bool(first.manual)) == (
                at(90), "bearing-failure", "alice", True)
            audit = conn.execute("select action, by from downtime_audit").fetchall()
            assert ("rederived", "system") in audit
    finally:
        pool.close()


def test_no_data_after_heartbeat_is_offline(fresh_db_url):
    _write(fresh_db_url, [StateChange("L1-M3", at(0), MachineState.RUNNING, "t")])
    with psycopg.connect(fresh_db_url) as conn:
        ctx = rollups.load_context(conn)
        hb = ctx.by_id["L1-M3"].heartbeat_s
        df = queries.periods(conn, ctx, ["L1-M3"], T0, T0 + dt.timedelta(hours=2), now=T0 + dt.timedelta(days=1))
        assert df["s_running"].sum() == pytest.approx(hb)
        assert df["s_offline"].sum() == pytest.approx(7200 - hb)
        states = queries.current_states(conn, ctx, now=T0 + dt.timedelta(days=1))
        assert states.set_index("machine").loc["L1-M3", "state"] == "offline"
        live = queries.current_states(conn, ctx, now=T0 + dt.timedelta(seconds=hb / 2))
        assert live.set_index("machine").loc["L1-M3", "state"] == "running"


def test_state_before_a_window_found_days_back(fresh_db_url):
    """The state holding at a window's start comes from the last state change before it, however long ago
    (the look-back first searches a day, then further): here an idle machine and a setup then a run, with
    only counts arriving for three days; a slice starting inside the run's startup window knows it."""
    events: list = [StateChange("L1-M3", at(0), MachineState.SETUP, "t"),
                    StateChange("L1-M3", at(100), MachineState.RUNNING, "t"),
                    StateChange("L1-M2", at(0), MachineState.IDLE, "t")]
    events += [ProductionCount(m, at(600 + 30 * k), 1, 0, "t") for m in ("L1-M3", "L1-M2") for k in range(1, 9000)]
    _write(fresh_db_url, events)
    with psycopg.connect(fresh_db_url) as conn:
        ctx = rollups.load_context(conn)
        a = T0 + dt.timedelta(days=3)
        m2, m3 = ctx.by_id["L1-M2"], ctx.by_id["L1-M3"]
        in_startup = at(100 + m3.startup_window_s / 2)  # the run after the setup is still a startup here
        idle, running, starting = rollups.read_slices(conn, [(m2, a, a + dt.timedelta(hours=1)),
                                                             (m3, a, a + dt.timedelta(hours=1)),
                                                             (m3, in_startup, a)])
        assert idle.initial_state == STATE_CODES[MachineState.IDLE]
        assert running.initial_state == starting.initial_state == STATE_CODES[MachineState.RUNNING]
        assert running.startup_since is None and starting.startup_since == at(100)
        day = dt.timedelta(days=1)
        fine = queries.periods(conn, ctx, ["L1-M2", "L1-M3"], a, a + dt.timedelta(hours=1), now=a + day)
        by = fine.groupby("machine")[["s_idle", "s_running"]].sum()
        assert by.loc["L1-M2", "s_idle"] == by.loc["L1-M3", "s_running"] == 3600


def test_stop_classes_in_rollups_follow_duration_and_reason(fresh_db_url):
    pool = db.make_pool(fresh_db_url)
    now = T0 + dt.timedelta(days=1)
    try:
        writer = EventWriter(pool)
        writer.write([
            StateChange("L1-M4", at(0), MachineState.RUNNING, "t"),
            StateChange("L1-M4", at(600), MachineState.UNPLANNED_STOP, "t"),  # 60 s: small stop
            StateChange("L1-M4", at(660), MachineState.RUNNING, "t"),
            StateChange("L1-M4", at(1200), MachineState.UNPLANNED_STOP, "t"),  # 300 s: breakdown
            StateChange("L1-M4", at(1500), MachineState.RUNNING, "t"),
            StateChange("L1-M4", at(1800), MachineState.SETUP, "t"),  # 200 s: planned by state
            StateChange("L1-M4", at(2000), MachineState.RUNNING, "t"),
            StateChange("L1-M4", at(2400), MachineState.UNPLANNED_STOP, "t"),  # 500 s, later given a planned reason
            StateChange("L1-M4", at(2900), MachineState.RUNNING, "t"),
            StateChange("L1-M4", at(7200), MachineState.RUNNING, "t"),
        ])
        with psycopg.connect(fresh_db_url) as conn:
            ctx = rollups.load_context(conn)
            queries.ensure_fresh(conn, ctx, now=now)

            def classes():
                df = queries.periods(conn, ctx, ["L1-M4"], T0, T0 + dt.timedelta(hours=2), now=now)
                return tuple(round(df[c].sum(), 6) for c in ("s_stop_planned", "s_stop_small", "s_stop_breakdown"))

            assert classes() == (200.0, 60.0, 800.0)
            from andon.storage import downtime

            stop_id = conn.execute("select id from downtime where start_ts = %s", (at(2400),)).fetchone()[0]
            downtime.set_reason(conn, stop_id, "bob", reason_code="planned-maintenance", comment="PM moved up")
            queries.ensure_fresh(conn, ctx, now=now)
            assert classes() == (700.0, 60.0, 300.0)
            audit = downtime.audit(conn, stop_id)
            assert audit[-1]["by"] == "bob" and audit[-1]["new"]["reason_code"] == "planned-maintenance"
            with pytest.raises(downtime.DowntimeEditError, match="unknown reason code"):
                downtime.set_reason(conn, stop_id, "bob", reason_code="no-such-reason")
            # Split the breakdown into two causes; each part keeps its own reason.
            bd = conn.execute("select id from downtime where start_ts = %s", (at(1200),)).fetchone()[0]
            first, second = downtime.split_stop(conn, ctx, bd, at(1300), "carol", now=now)
            downtime.set_reason(conn, second, "carol", reason_code="material-missing")
            df = queries.stops(conn, ctx, ["L1-M4"], T0, now)
            parts = df[df.start_ts.isin([at(1200), at(1300)])]
            assert list(zip(parts.start_ts, parts.end_ts, parts.reason_code, strict=True)) == [
                (at(1200), at(1300), None), (at(1300), at(1500), "material-missing")]
            with pytest.raises(downtime.DowntimeEditError, match="not inside the stop"):
                downtime.split_stop(conn, ctx, first, at(5000), "carol", now=now)
    finally:
        pool.close()


def test_day_grain_follows_the_watermark_through_a_day(fresh_db_url, caplog):
    """Data arriving up to the middle of a local day: that day's stored rows are partial (rollups end at
    the watermark) and are rewritten as the data and the watermark move on; grain="day" always equals the
    fine periods and the brute force, and falls back to the periods (with a warning) if the day grain
    were ever out of step."""
    events = _random_events("L1-M2", 5, 3.0)
    berlin = ZoneInfo("Europe/Berlin")
    window = (T0 - dt.timedelta(hours=5), T0 + dt.timedelta(days=3, hours=7, minutes=13))
    now = T0 + dt.timedelta(days=10)
    pool = db.make_pool(fresh_db_url)
    try:
        writer = EventWriter(pool)
        with psycopg.connect(fresh_db_url) as conn:
            ctx = rollups.load_context(conn)
            written: list = []
            for upto in (T0 + dt.timedelta(days=1, hours=13, minutes=20), T0 + dt.timedelta(days=2, hours=4),
                         T0 + dt.timedelta(days=5)):
                batch = [e for e in events if e not in written and e.ts < upto]
                writer.write(batch)
                written += batch
                queries.ensure_fresh(conn, ctx, now=now)
                covered = conn.execute("select covered_to from rollup_watermarks").fetchone()[0]
                daily = _assert_daily_equals_hourly(conn)
                last_day = max(k[1] for k in daily)
                assert last_day == (covered - dt.timedelta(microseconds=1)).astimezone(berlin).date()
                with caplog.at_level("WARNING", logger="andon.storage.queries"):
                    coarse = _assert_day_grain_equals_fine(conn, ctx, "L1-M2", *window, now)
                assert "do not tile" not in caplog.text
                if upto > window[1]:  # all stored: a few rows per day (fine periods only before the data)
                    assert len(coarse) < 40
                _check_against_brute_force(conn, ctx, written, *window, now)
            # A day row gone missing (never done by refresh): detected, the periods answer instead.
            conn.execute("delete from machine_rollups_daily where day = %s",
                         ((T0 + dt.timedelta(days=1)).astimezone(berlin).date(),))
            with caplog.at_level("WARNING", logger="andon.storage.queries"):
                _assert_day_grain_equals_fine(conn, ctx, "L1-M2", *window, now)
            assert "do not tile" in caplog.text
            conn.rollback()
    finally:
        pool.close()


# --- startup rejects at window and rollup-hour edges --------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
STARTUP_DAY = dt.datetime(2026, 10, 20, tzinfo=BERLIN)  # a Tuesday, no DST change


def _local(hh: int, mm: int = 0, ss: int = 0, day: int = 0) -> dt.datetime:
    return (STARTUP_DAY + dt.timedelta(days=day, hours=hh, minutes=mm, seconds=ss)).astimezone(UTC)


def _startup_edge_events() -> tuple[list, int, int]:
    """Restarts a few minutes before local whole hours, each machine counting 10 parts with 1 reject at
    :15 and :45 of every minute it runs; returns (events, startup rejects, all rejects) by construction.

    L1-M3: a planned stop of 42 h (over a day: the look-back has to go past its first day) ending at
    05:58:30; a 38-minute setup ending at 09:58:00; an unplanned stop 13:30-13:59 (its restart is no
    startup); a 2-minute setup ending at 15:59:00. L1-M2: no data before its first run at 07:59:00 (no
    data is offline, and a run from offline starts a startup window, as inside one period). Every
    startup window (300 s) holds 10 counts, some before the whole hour and the rest after it."""
    m3 = [(_local(12, day=-2), MachineState.PLANNED_STOP), (_local(5, 58, 30), MachineState.RUNNING),
          (_local(9, 20), MachineState.SETUP), (_local(9, 58), MachineState.RUNNING),
          (_local(13, 30), MachineState.UNPLANNED_STOP), (_local(13, 59), MachineState.RUNNING),
          (_local(15, 57), MachineState.SETUP), (_local(15, 59), MachineState.RUNNING)]
    m2 = [(_local(7, 59), MachineState.RUNNING)]
    end = _local(0, day=1)
    events: list = []
    rejects = 0
    for machine, changes in (("L1-M3", m3), ("L1-M2", m2)):
        # (A last event at the end of the day: the rollups' watermark reaches it.)
        events += [StateChange(machine, t, s, "t") for t, s in [*changes, (end, MachineState.RUNNING)]]
        runs = [(t, changes[i + 1][0] if i + 1 < len(changes) else end)
                for i, (t, s) in enumerate(changes) if s is MachineState.RUNNING]
        for a, b in runs:
            t = a + dt.timedelta(seconds=15)
            while t < b:
                events.append(ProductionCount(machine, t, 10, 1, "t"))
                rejects += 1
                t += dt.timedelta(seconds=30)
    startups = 4  # 05:58:30, 09:58:00 and 15:59:00 on L1-M3, 07:59:00 on L1-M2 (13:59:00 follows a breakdown)
    return events, 10 * startups, rejects


def test_startup_rejects_are_the_same_whatever_the_window_and_rollup_cuts(fresh_db_url):
    """Issue #5: a run straddling a window edge is clipped to it, so a day equals the sum of its hours. Here
    the rollups are written hour by hour (as the live refresh does, each hour cut at its start) and the
    startup rejects of the day come out the same from the stored hours, the stored day, a day computed
    in one piece, windows cut inside the startup windows and the OEE answer, and equal the count known
    by construction."""
    events, startup, rejects = _startup_edge_events()
    _write(fresh_db_url, events)
    day0, day1 = _local(0), _local(0, day=1)
    now = day1 + dt.timedelta(hours=1)
    machines = ["L1-M2", "L1-M3"]
    with psycopg.connect(fresh_db_url) as conn:
        ctx = rollups.load_context(conn)
        # The live refresher: each run writes the hours ended since the last one.
        for hour in range(25):
            rollups.refresh(conn, ctx, now=day0 + dt.timedelta(hours=hour))
            conn.commit()
        assert conn.execute("select min(covered_to) from rollup_watermarks").fetchone()[0] == day1
        hourly = queries.periods(conn, ctx, machines, day0, day1, now=now)
        assert hourly["period_end"].max() == day1  # all stored hours, nothing computed live
        daily = queries.periods(conn, ctx, machines, day0, day1, now=now, grain="day")
        one_piece = [r for m in machines for r in rollups.compute_periods(
            conn, ctx.by_id[m], day0, day1, day1 + dt.timedelta(hours=1))]
        # Windows whose edges fall inside the startup windows (after each whole hour, before the 10th count).
        cuts = [day0, _local(6, 1, 30), _local(8, 2), _local(10, 0, 40), _local(16, 3), day1]
        pieces = [queries.periods(conn, ctx, machines, a, b, now=now) for a, b in itertools.pairwise(cuts)]
        assert hourly["reject_count"].sum() == rejects
        assert {
            "stored hours": hourly["startup_rejects"].sum(),
            "stored day": daily["startup_rejects"].sum(),
            "day in one piece": sum(r[rollups.ROLLUP_COLUMNS.index("startup_rejects")] for r in one_piece),
            "windows cut in startup windows": sum(p["startup_rejects"].sum() for p in pieces),
        } == dict.fromkeys(("stored hours", "stored day", "day in one piece", "windows cut in startup windows"),
                           startup)
        # Through the API's own path: startup vs production rejects of the day, of its hours summed.
        periods, stops = service.load(conn, ctx, machines, day0, day1, now, grain=None)
        answer = service.oee_answer(periods, stops, ctx, now, "hour", BERLIN)
        six = answer["oee"]["six_big_losses"]
        assert (six["startup_reject_count"], six["production_reject_count"]) == (startup, rejects - startup)
        buckets = [b["six_big_losses"] for b in answer["buckets"]]
        assert sum(b["startup_reject_count"] for b in buckets) == startup
        assert sum(b["production_reject_count"] for b in buckets) == rejects - startup


def test_startup_window_cut_by_a_window_edge_in_the_pure_path():
    """timeline.integrate (the computation behind rollups and live edges, no I/O): a day integrated in one
    piece equals the day cut inside a startup window when the second piece is told the run's start
    (startup_since); without it the rejects after the cut would be production rejects."""
    events, _, _ = _startup_edge_events()
    ev = sorted((e for e in events if e.machine_id == "L1-M3"), key=lambda e: e.ts)
    states = [e for e in ev if isinstance(e, StateChange)]
    counts = [e for e in ev if isinstance(e, ProductionCount)]
    day0, day1, cut, run_start = _local(0), _local(0, day=1), _local(10, 1, 10), _local(9, 58)
    plant = load_plant_model(Path(__file__).resolve().parent.parent / "config" / "plant.yaml")
    calendar = plant.sites[0].calendar

    def integrate(a: dt.datetime, b: dt.datetime, initial: MachineState, since: dt.datetime | None):
        inside = [e for e in states if a < e.ts < b]
        mine = [e for e in counts if a <= e.ts < b]
        grid = timeline.period_grid(calendar, BERLIN, a, b)
        sums = timeline.integrate(grid, [e.ts for e in inside], [STATE_CODES[e.state] for e in inside],
                                  STATE_CODES[initial], None, [e.ts for e in mine], [e.total for e in mine],
                                  [e.reject for e in mine], [e.total * 1.0 for e in mine], 300.0, since)
        return grid, sums

    startup_col = timeline.N_STATES + 2
    _, whole = integrate(day0, day1, MachineState.PLANNED_STOP, None)
    _, before = integrate(day0, cut, MachineState.PLANNED_STOP, None)
    _, after = integrate(cut, day1, MachineState.RUNNING, run_start)
    _, unknown = integrate(cut, day1, MachineState.RUNNING, None)  # what a cut without the run's start gives
    assert whole[:, startup_col].sum() == 30
    assert before[:, startup_col].sum() + after[:, startup_col].sum() == 30
    # The 4 counts 10:01:15-10:02:45 would be lost.
    assert unknown[:, startup_col].sum() == after[:, startup_col].sum() - 4
