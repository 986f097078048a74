"""HTTP ingest through the real API and database: validation per event, idempotent replays, counters
across requests, bounds, roles and rate limiting."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from fastapi.testclient import TestClient

from andon.settings import Settings
from andon.storage import keys
from api.app import create_app

T0 = dt.datetime(2026, 9, 1, 6, 0, tzinfo=dt.UTC)


@pytest.fixture
def ingest_api(fresh_db_url):
    # A small burst so the rate limit is reached whatever the machine's speed.
    with psycopg.connect(fresh_db_url) as conn:
        tokens = {r: keys.create_key(conn, f"gw-{r}", r)[1] for r in ("gateway", "viewer")}
        conn.commit()
    app = create_app(Settings(database_url=fresh_db_url, ingest_rate_per_s=0.2, ingest_burst=30),
                     refresh_interval_s=3600, score_risk=False)
    with TestClient(app) as client:
        yield client, {r: {"X-API-Key": t} for r, t in tokens.items()}, fresh_db_url


def ts(s: float) -> str:
    return (T0 + dt.timedelta(seconds=s)).isoformat()


def test_batch_with_good_and_bad_events(ingest_api):
    client, h, url = ingest_api
    body = {"events": [
        {"kind": "state", "machine_id": "L1-M1", "ts": ts(0), "state": "running", "seq": 1},
        {"kind": "telemetry", "machine_id": "L1-M1", "ts": ts(1), "metric": "vibration_rms", "value": 2.5,
         "unit": "mm/s"},
        {"kind": "count", "machine_id": "L1-M2", "ts": ts(2), "total": 3, "reject": 1},
        {"kind": "state", "machine_id": "nope", "ts": ts(3), "state": "running"},
        {"kind": "count", "machine_id": "L1-M2", "total": 3},
        {"kind": "count", "machine_id": "L1-M2", "ts": "2026-09-01T06:00:00", "total": 1},
    ]}
    r = client.post("/api/v1/ingest", json=body, headers=h["gateway"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["received"], out["stored"], out["duplicates"]) == (6, 3, 0)
    reasons = {x["index"]: x["reason"] for x in out["rejected"]}
    assert set(reasons) == {3, 4, 5}
    assert "unknown machine 'nope'" in reasons[3]
    assert reasons[4].startswith("events[4]") and "ts" in reasons[4]
    assert "time zone" in reasons[5]
    again = client.post("/api/v1/ingest", json=body, headers=h["gateway"]).json()
    assert (again["stored"], again["duplicates"]) == (0, 3)
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from dead_letters where source_id = 'http:gw-gateway'").fetchone()[0] == 6
        assert conn.execute("select unit from telemetry_metrics").fetchone()[0] == "mm/s"


def test_counters_across_requests_and_wrap(ingest_api):
    client, h, url = ingest_api

    def post(readings):
        return client.post("/api/v1/ingest", headers=h["gateway"], json={"events": [
            {"kind": "counter", "machine_id": "L1-M3", "ts": ts(t), "processed": p, "defective": d}
            for t, p, d in readings]}).json()

    first = post([(0, 4_294_967_290, 7)])
    assert first["counter_baselines"] == 1 and first["stored"] == 1  # a zero-part baseline row
    post([(10, 4_294_967_295, 7), (20, 4_294_967_295, 8)])
    post([(30, 12, 9)])  # no bit width given: a drop is a reset, counted from zero
    with psycopg.connect(url) as conn:
        total, reject = conn.execute("select sum(total), sum(reject) from count_events").fetchone()
    # +5 parts; then a defective count without a processed one (counted as one rejected part); then
    # the processed counter restarts from zero (12 parts) while the defective one moves on by 1.
    assert (total, reject) == (5 + 1 + 12, 0 + 1 + 1)


def test_bounds_roles_and_rate_limit(ingest_api):
    client, h, _ = ingest_api
    ev = {"kind": "state", "machine_id": "L1-M1", "ts": ts(0), "state": "idle"}
    assert client.post("/api/v1/ingest", json={"events": [ev]}).status_code == 401
    r = client.post("/api/v1/ingest", json={"events": [ev]}, headers=h["viewer"])
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert client.post("/api/v1/ingest", content=b"{nope", headers=h["gateway"]).status_code == 400
    assert client.post("/api/v1/ingest", json={"events": []}, headers=h["gateway"]).status_code == 422
    assert client.post("/api/v1/ingest", json={"events": [ev], "x": 1}, headers=h["gateway"]).status_code == 422
    assert client.post("/api/v1/ingest", json={"events": [ev] * 10_001}, headers=h["gateway"]).status_code in (413,
                                                                                                               422)
    big = json.dumps({"events": [{**ev, "reason_code": "x" * 60}] * 40_000})
    assert client.post("/api/v1/ingest", content=big, headers={**h["gateway"], "Content-Type": "application/json"}
                       ).status_code == 413
    codes = [client.post("/api/v1/ingest", json={"events": [ev]}, headers=h["gateway"]) for _ in range(40)]
    statuses = [r.status_code for r in codes]
    assert statuses[0] == 200 and 429 in statuses
    limited = codes[statuses.index(429)]
    assert int(limited.headers["Retry-After"]) >= 1
