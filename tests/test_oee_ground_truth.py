"""Andon's OEE against the simulator's ground truth: a 30-day, 10-machine line written as canonical
events into TimescaleDB, rolled up, read back and computed by the analytics core, must match the true
figures to 0.1 percentage point per machine (and the line roll-up too)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

import analytics
from andon.storage import db, plant_sync, queries, rollups
from andon.storage.writer import EventWriter
from bench.simulate import bench_config, bench_plant
from simulator.simulation import simulate
from simulator.truth import true_oee, truth_to_events

START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)  # spans the European DST change of 2026-03-29
DAYS = 30
TOL = 0.001  # 0.1 percentage point


@pytest.mark.timeout(600)
def test_thirty_days_ten_machines_match_ground_truth(fresh_db_url):
    plant, config = bench_plant(10), bench_config(10)
    truth = simulate(plant, config, seed=5, start=START, duration=dt.timedelta(days=DAYS), telemetry=False)
    with psycopg.connect(fresh_db_url) as conn:
        plant_sync.sync_plant_model(conn, plant, "test", force=True)
        conn.commit()
    pool = db.make_pool(fresh_db_url, 1, 2)
    try:
        writer = EventWriter(pool)
        batch: list = []
        for ev in truth_to_events(truth, source_id="sim", include_telemetry=False):
            batch.append(ev)
            if len(batch) >= 50_000:
                writer.write(batch)
                batch = []
        writer.write(batch)
    finally:
        pool.close()
    # The window ends a day before the data does, so no "no data" tail enters it.
    a, b = START, START + dt.timedelta(days=DAYS - 1)
    now = START + dt.timedelta(days=DAYS + 5)
    ids = [m.id for m in plant.machines()]
    with psycopg.connect(fresh_db_url) as conn:
        ctx = rollups.load_context(conn)
        queries.ensure_fresh(conn, ctx, now)
        periods = queries.periods(conn, ctx, ids, a, b, now=now, grain="day")
    policy = analytics.OeePolicy.from_settings(plant.settings)
    per_machine = analytics.oee_by(periods, None, policy, "machine", now)
    true_totals = {"ppt": 0.0, "run": 0.0, "ideal": 0.0, "good": 0, "total": 0}
    for mid in ids:
        got, want = per_machine[mid], true_oee(truth, mid, a, b)
        assert got.planned_production_time_s == pytest.approx(want.planned_production_s, abs=1.0), mid
        for name in ("availability", "performance", "quality", "oee"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), abs=TOL), (mid, name)
        assert (got.totals.total_count, got.good_count) == (want.total_count, want.good_count), mid
        true_totals["ppt"] += want.planned_production_s
        true_totals["run"] += want.run_s
        true_totals["ideal"] += want.ideal_s
        true_totals["good"] += want.good_count
        true_totals["total"] += want.total_count
    # The line's machines rolled up by summing times and counts, against the truth summed the same way.
    rolled = analytics.rollup(per_machine.values())
    true_oee_sum = (true_totals["run"] / true_totals["ppt"]) * min(1.0, true_totals["ideal"] / true_totals["run"]) \
        * (true_totals["good"] / true_totals["total"])
    assert rolled.oee == pytest.approx(true_oee_sum, abs=TOL)
