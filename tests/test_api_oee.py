"""OEE, downtime and reliability through stored events and the API (not only through pure functions)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from andon.events import MachineState, ProductionCount, StateChange
from andon.plant import load_plant_model
from andon.settings import Settings
from andon.storage import db, keys, plant_sync
from andon.storage.writer import EventWriter
from api.app import create_app

FIXTURES = Path(__file__).parent / "fixtures"
CHICAGO = dt.timezone(dt.timedelta(hours=-6))  # 2026-11-24 is CST


@pytest.fixture
def example_api(fresh_db_url):
    model = load_plant_model(FIXTURES / "oee_example.yaml")
    with psycopg.connect(fresh_db_url) as conn:
        plant_sync.sync_plant_model(conn, model, "test", force=True)
        _, token = keys.create_key(conn, "viewer", "viewer")
        _, maint = keys.create_key(conn, "maint", "maintainer")
        conn.commit()
    app = create_app(Settings(database_url=fresh_db_url), refresh_interval_s=3600)
    with TestClient(app) as client:
        yield client, {"X-API-Key": token}, {"X-API-Key": maint}, fresh_db_url


def _shift_events() -> tuple[list, dt.datetime, dt.datetime]:
    """One 480-minute shift: 47 minutes down in one stop, 19,271 parts of which 423 rejects."""
    start = dt.datetime(2026, 11, 24, 6, 0, tzinfo=CHICAGO)
    end = start + dt.timedelta(minutes=480)
    m = "widget-press"

    def t(minutes: float) -> dt.datetime:
        return start + dt.timedelta(minutes=minutes)

    events = [
        StateChange(m, t(0), MachineState.RUNNING, "plc"),
        StateChange(m, t(120), MachineState.IDLE, "plc"),  # break 08:00-08:15
        StateChange(m, t(135), MachineState.RUNNING, "plc"),
        StateChange(m, t(150), MachineState.UNPLANNED_STOP, "plc", reason_code="jam-clear"),
        StateChange(m, t(197), MachineState.RUNNING, "plc"),  # 47 minutes down
        StateChange(m, t(240), MachineState.IDLE, "plc"),  # meal 10:00-10:30
        StateChange(m, t(270), MachineState.RUNNING, "plc"),
        StateChange(m, t(360), MachineState.IDLE, "plc"),  # break 12:00-12:15
        StateChange(m, t(375), MachineState.RUNNING, "plc"),
        StateChange(m, t(480), MachineState.IDLE, "plc"),  # end of shift
    ]
    # 19,271 parts spread over the running time, 423 of them rejected, reported every minute.
    running_minutes = [x for x in range(480) if not (120 <= x < 135 or 150 <= x < 197 or 240 <= x < 270
                                                      or 360 <= x < 375)]
    total, reject = 19271, 423
    n = len(running_minutes)
    for i, minute in enumerate(running_minutes):
        tot = total * (i + 1) // n - total * i // n
        rej = reject * (i + 1) // n - reject * i // n
        events.append(ProductionCount(m, t(minute + 0.5), tot, rej, "plc"))
    return events, start, end


def test_published_oee_example_through_storage_and_api(example_api):
    client, viewer, _, url = example_api
    events, start, end = _shift_events()
    pool = db.make_pool(url)
    try:
        EventWriter(pool).write(events)
    finally:
        pool.close()
    r = client.get("/api/v1/machines/widget-press/oee",
                   params={"start": start.isoformat(), "end": end.isoformat(), "bucket": "hour"}, headers=viewer)
    assert r.status_code == 200, r.text
    oee = r.json()["oee"]
    assert oee["planned_production_time_s"] == pytest.approx(420 * 60)
    assert oee["run_time_s"] == pytest.approx(373 * 60)
    assert (round(100 * oee["availability"], 2), round(100 * oee["performance"], 2),
            round(100 * oee["quality"], 2), round(100 * oee["oee"], 2)) == (88.81, 86.11, 97.80, 74.79)
    assert oee["good_count"] == 18848
    # The hour buckets add up to the shift, and OEE from the buckets' sums equals the shift's.
    buckets = r.json()["buckets"]
    assert len(buckets) == 8
    assert sum(b["total_count"] for b in buckets) == 19271
    assert sum(b["planned_production_time_s"] for b in buckets) == pytest.approx(420 * 60)
    # A window that cuts the shift at odd minutes still adds up with its complement.
    mid = start + dt.timedelta(minutes=203, seconds=17)
    parts = [client.get("/api/v1/machines/widget-press/oee", params={"start": a.isoformat(), "end": b.isoformat()},
                        headers=viewer).json()["oee"] for a, b in ((start, mid), (mid, end))]
    assert parts[0]["run_time_s"] + parts[1]["run_time_s"] == pytest.approx(373 * 60)
    assert parts[0]["total_count"] + parts[1]["total_count"] == 19271
    # The line view: one machine, so the line OEE is the machine's.
    line = client.get("/api/v1/lines/example-line/oee", params={"start": start.isoformat(), "end": end.isoformat()},
                      headers=viewer).json()
    assert round(100 * line["line_oee"]["oee"]["oee"], 2) == 74.79
    # Downtime: the one stop with its reason, in the Pareto.
    stops = client.get("/api/v1/downtime", params={"line": "example-line", "start": start.isoformat(),
                                                   "end": end.isoformat()}, headers=viewer).json()
    assert [s["reason_code"] for s in stops["stops"] if s["state"] == "unplanned_stop"] == ["jam-clear"]
    pareto = client.get("/api/v1/downtime/pareto", params={"line": "example-line", "start": start.isoformat(),
                                                          "end": end.isoformat()}, headers=viewer).json()
    assert pareto["rows"][0]["key"] == "jam-clear" and pareto["rows"][0]["duration_s"] == pytest.approx(47 * 60)
    csv = client.get("/api/v1/lines/example-line/shift-report", params={
        "start": start.isoformat(), "end": end.isoformat(), "format": "csv"}, headers=viewer)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "2026-11-24/day" in csv.text
    report = client.get("/api/v1/lines/example-line/shift-report", params={
        "start": start.isoformat(), "end": end.isoformat()}, headers=viewer).json()["shifts"][0]
    assert report["target_count"] == 21000  # 420 minutes at a 1.2 s takt
    assert report["actual_good"] == 18848


def test_reason_entry_moves_time_in_pareto(example_api):
    client, viewer, maint, url = example_api
    start = dt.datetime(2026, 11, 24, 6, 0, tzinfo=CHICAGO)
    pool = db.make_pool(url)
    try:
        EventWriter(pool).write([
            StateChange("widget-press", start, MachineState.RUNNING, "plc"),
            StateChange("widget-press", start + dt.timedelta(minutes=20), MachineState.UNPLANNED_STOP, "plc"),
            StateChange("widget-press", start + dt.timedelta(minutes=30), MachineState.RUNNING, "plc"),
        ])
    finally:
        pool.close()
    params = {"line": "example-line", "start": start.isoformat(),
              "end": (start + dt.timedelta(hours=1)).isoformat()}
    unassigned = client.get("/api/v1/downtime", params={**params, "unassigned": True}, headers=viewer).json()
    assert len(unassigned["stops"]) == 1
    stop_id = unassigned["stops"][0]["stop_id"]
    before = client.get("/api/v1/downtime/pareto", params=params, headers=viewer).json()["rows"]
    assert before[0]["key"] == "(unassigned)"
    r = client.patch(f"/api/v1/downtime/{stop_id}", json={"reason_code": "jam-clear"}, headers=viewer)
    assert r.status_code == 403
    r = client.patch(f"/api/v1/downtime/{stop_id}", json={"reason_code": "nope"}, headers=maint)
    assert r.status_code == 422 and "unknown reason code" in r.json()["detail"]
    r = client.patch(f"/api/v1/downtime/{stop_id}", json={"reason_code": "jam-clear", "comment": "chute"},
                     headers=maint)
    assert r.status_code == 200 and r.json()["audit"][-1]["by"] == "maint"
    after = client.get("/api/v1/downtime/pareto", params=params, headers=viewer).json()["rows"]
    assert after[0]["key"] == "jam-clear" and after[0]["duration_s"] == pytest.approx(600)
    assert client.get("/api/v1/downtime", params={**params, "unassigned": True}, headers=viewer).json()["stops"] == []
