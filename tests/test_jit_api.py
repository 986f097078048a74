"""JIT readiness through stored events and the API: simulated history -> canonical events -> TimescaleDB
-> GET /lines/{line}/jit-readiness and POST /lines/{line}/what-if (real database, demo plant model)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from fastapi.testclient import TestClient

from andon.plant import PlantModel
from andon.settings import Settings
from andon.storage import db, keys
from andon.storage.writer import EventWriter
from api.app import create_app
from simulator.config import SimulationConfig
from simulator.simulation import simulate
from simulator.truth import truth_to_events

START = dt.datetime(2026, 3, 2, 5, 0, tzinfo=dt.UTC)  # a Monday, 06:00 in Berlin
DAYS = 5


@pytest.fixture
def jit_api(fresh_db_url: str, demo_plant: PlantModel):
    # A plain line: one product (no changeovers), no wear; failures and micro-stops as in the defaults.
    config = SimulationConfig.model_validate({
        "defaults": {"telemetry": {"enabled": False}, "slow_cycles": {"probability": 0.0},
                     "failures": {"time_between": {"dist": "exponential", "mean": 12, "unit": "h"},
                                  "repair": {"dist": "lognormal", "median": 12, "sigma": 0.6, "unit": "min"}}},
        "line": {"initial_fill": "normal"},
    })
    truth = simulate(demo_plant, config, seed=7, start=START, duration=dt.timedelta(days=DAYS), line_id="line1",
                     telemetry=False)
    pool = db.make_pool(fresh_db_url)
    try:
        EventWriter(pool).write(truth_to_events(truth, include_telemetry=False))
    finally:
        pool.close()
    with psycopg.connect(fresh_db_url) as conn:
        _, token = keys.create_key(conn, "viewer", "viewer")
        conn.commit()
    app = create_app(Settings(database_url=fresh_db_url), refresh_interval_s=3600)
    with TestClient(app) as client:
        yield client, {"X-API-Key": token}, truth


def test_jit_readiness_from_stored_events(jit_api) -> None:
    client, viewer, truth = jit_api
    window = {"start": truth.start.isoformat(), "end": truth.end.isoformat()}
    r = client.get("/api/v1/lines/line1/jit-readiness", params={**window, "precision": "quick", "seed": 3},
                   headers=viewer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] in ("READY", "REDUCE", "NOT_READY")
    machines = ["L1-M1", "L1-M2", "L1-M3", "L1-M4", "L1-M5", "L1-M6"]
    rec = body["recommendation"]
    assert [lk["after"] for lk in rec["links"]] == machines
    assert [lk["current"] for lk in rec["links"]] == [20, 20, 15, 10, 10, 0]  # the plant model; last: finished goods
    assert rec["total_current"] == 75
    assert rec["inventory_freed"] == 75 - rec["total_recommended"]
    # The curves: one per link, each with the listed sizes and today's, fractions of demand with a CI.
    assert [c["after"] for c in body["curves"]] == machines
    for c in body["curves"]:
        sizes = [p["buffer"] for p in c["points"]]
        assert {0, 1, 2, 5, 10, 20, 50, c["current"]} <= set(sizes)
        for p in c["points"]:
            assert p["ci_low"] <= p["throughput_fraction"] <= p["ci_high"] <= 1.0 + 1e-12
    # Measured from the database, the breakdowns per machine are the simulator's failures of the window.
    failures = truth.failures
    by_machine = {m["machine"]: m for m in body["evidence"]["machines"]}
    for mid in machines:
        expected = int(((failures["machine_id"] == mid) & (failures["repair_end"] <= truth.end)).sum())
        assert by_machine[mid]["breakdowns"]["count"] == expected, mid
    # Five days give a few breakdowns per machine: too few to resample, so the model says it fitted them.
    assert any("fitted" in body["inputs"][m]["breakdowns"] for m in machines if by_machine[m]["breakdowns"]["count"])
    assert body["blockers"] and {b["machine"] for b in body["blockers"]} <= set(machines)
    assert set(body["evidence_summary"]) >= {"Availability", "MTBF", "MTTR", "Stops per shift", "Kingman"}
    # The same seed and data give the same answer.
    again = client.get("/api/v1/lines/line1/jit-readiness", params={**window, "precision": "quick", "seed": 3},
                       headers=viewer).json()
    assert again["recommendation"] == rec and again["curves"] == body["curves"]


def test_what_if_and_errors(jit_api) -> None:
    client, viewer, truth = jit_api
    window = {"start": truth.start.isoformat(), "end": truth.end.isoformat()}
    r = client.post("/api/v1/lines/line1/what-if", headers=viewer, json={
        **window, "precision": "quick", "buffers": {"L1-M6": 5, "L1-M1": 2},
        "improvements": [{"machine": "L1-M3", "mttr_factor": 0.5, "failure_rate_factor": 0.5}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [b["size"] for b in body["buffers"]] == [2, 20, 15, 10, 10, 5]
    assert body["improvements"] == ["L1-M3: MTTR halved, failures halved"]
    # Fewer and shorter stops never lower throughput with the same draws (common random numbers).
    assert body["gain"]["throughput_fraction"] >= 0
    assert body["predicted"]["throughput_fraction"] >= body["baseline"]["throughput_fraction"]
    assert len(body["recommendation"]["links"]) == 6
    bad = client.post("/api/v1/lines/line1/what-if", headers=viewer, json={**window, "buffers": {"nope": 3}})
    assert bad.status_code == 404 and bad.headers["content-type"].startswith("application/problem+json")
    bad = client.get("/api/v1/lines/line1/jit-readiness", params={**window, "target": 1.5}, headers=viewer)
    assert bad.status_code == 422
    assert client.get("/api/v1/lines/nope/jit-readiness", params=window, headers=viewer).status_code == 404
    assert client.get("/api/v1/lines/line1/jit-readiness", params=window).status_code == 401
