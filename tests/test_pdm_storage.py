"""PdM through the database: SQL binning equals the reference, train -> store -> score -> alert once,
webhooks on a loopback HTTP server, and the API."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import numpy as np
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from analytics.pdm.data import BIN_COLUMNS, bin_telemetry
from analytics.pdm.engine import TrainConfig
from analytics.pdm.features import FeatureConfig
from andon import pdm
from andon.events import TelemetrySample
from andon.plant import load_plant_model
from andon.settings import Settings
from andon.storage import db, keys
from andon.storage import pdm as store
from andon.storage.rollups import load_context
from andon.storage.writer import EventWriter
from api.app import create_app
from simulator.config import load_simulation_config
from simulator.simulation import simulate
from simulator.truth import truth_to_events
from tests.conftest import REPO

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def test_sql_bins_equal_the_reference(fresh_db_url):
    rng = np.random.default_rng(7)
    ts = [START + dt.timedelta(seconds=7 * k) for k in range(600)]
    values = rng.normal(2.0, 0.3, len(ts))
    values[50:60] = 0.0  # flat line
    values[200:203] = 32767.0  # out of range
    values[300:340] = values[300]  # stuck
    events = [TelemetrySample("L1-M1", t, "vibration_rms", float(v), "test") for t, v in zip(ts, values, strict=True)]
    events += [TelemetrySample("L1-M1", t, "bearing_temp", float(40 + v), "test")
               for t, v in zip(ts, values, strict=True)]
    pool = db.make_pool(fresh_db_url)
    try:
        EventWriter(pool).write(events)
    finally:
        pool.close()
    with psycopg.connect(fresh_db_url) as conn:
        ctx = load_context(conn)
        sql = store.telemetry_bins(conn, ctx, ["L1-M1"], START, START + dt.timedelta(hours=2), 600.0)
    raw = pd.DataFrame({"machine": "L1-M1", "ts": pd.to_datetime(ts, utc=True), "metric": "vibration_rms",
                        "value": values})
    raw = pd.concat([raw, raw.assign(metric="bearing_temp", value=40 + values)], ignore_index=True)
    ref = bin_telemetry(raw, pd.Timestamp(START), 600.0)
    sql = sql.sort_values(["metric", "bin_start"]).reset_index(drop=True)
    ref = ref.sort_values(["metric", "bin_start"]).reset_index(drop=True)
    assert len(sql) == len(ref) == 2 * 7
    assert (sql[["machine", "metric"]].to_numpy() == ref[["machine", "metric"]].to_numpy()).all()
    assert (sql["bin_start"] == ref["bin_start"]).all()
    for c in BIN_COLUMNS[3:]:
        np.testing.assert_allclose(sql[c].to_numpy(float), ref[c].to_numpy(float), rtol=1e-7, equal_nan=True,
                                   err_msg=c)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server():
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()
    server.server_close()


def _load_line(url: str, days: int) -> dt.datetime:
    plant = load_plant_model(REPO / "config" / "plant.yaml")
    cfg = load_simulation_config(REPO / "config" / "simulation.yaml")
    cfg = cfg.model_copy(update={"defaults": cfg.defaults.model_copy(update={
        "telemetry": cfg.defaults.telemetry.model_copy(update={"rates_s": dict.fromkeys(
            ("vibration_rms", "bearing_temp", "motor_current", "cycle_time"), 300.0)})})})
    truth = simulate(plant, cfg, seed=21, start=START, duration=dt.timedelta(days=days))
    warnings = [TelemetrySample(m, t.to_pydatetime(), f"warning:{c}", 1.0, "sim")
                for m, t, c in zip(truth.warnings["machine_id"], truth.warnings["ts"], truth.warnings["code"],
                                   strict=True)]
    pool = db.make_pool(url)
    try:
        writer = EventWriter(pool)
        writer.write(list(truth_to_events(truth, count_batch_s=600.0)))
        writer.write(warnings)
    finally:
        pool.close()
    return START + dt.timedelta(days=days)


def _store_variant(url: str, scope: str, **thresholds: float) -> int:
    """Promote a copy of the promoted model with other thresholds (forces levels for the alert test)."""
    with psycopg.connect(url) as conn:
        _version, metrics, blob, sha = store.promoted_model(conn, scope)
        model = pdm.deserialize(blob, sha)
        model.thresholds = dataclasses.replace(model.thresholds, **thresholds)
        blob, sha = pdm.serialize(model)
        v = store.insert_model(conn, scope=scope, train_start=START, train_end=START + dt.timedelta(days=1),
                               horizon_h=24.0, status="promoted", status_reason="test variant", metrics=metrics,
                               params={}, pipeline=blob, sha256=sha)
        conn.commit()
    return v


def test_train_score_alert_once_and_api(fresh_db_url, webhook_server):
    url_hook, received = webhook_server
    end = _load_line(fresh_db_url, days=10)
    ps = pdm.PdmSettings(target_fault_codes=["E105", "E401"], webhooks=[url_hook], score_window_days=7,
                           bin_s=1800.0)
    # The lifecycle is under test here, not the model's quality (tests/test_pdm_model.py): a light config.
    light = TrainConfig(features=FeatureConfig(bin_s=ps.bin_s, horizon_h=ps.horizon_h), folds=3,
                        gain_augmentation=())
    report = pdm.train(fresh_db_url, scope="line:line1", start=START, end=end, settings=ps, config=light)
    assert report.status == "promoted" and report.previous_version is None
    # 10 days of 30-min bins sampled every third bin on 6 machines, less the samples under repair.
    assert report.metrics["machines"] == 6 and 900 <= report.metrics["samples"] <= 6 * 10 * 48 // 3

    # A second training on the same window is judged against the first on that window.
    again = pdm.train(fresh_db_url, scope="line:line1", start=START, end=end, settings=ps, config=light)
    assert again.previous_version == report.version
    assert again.previous_quality is not None
    assert again.status == ("rejected" if again.quality + ps.promote_tolerance < again.previous_quality
                            else "promoted")

    risks = pdm.score(fresh_db_url, now=end, settings=ps)
    assert sorted(r["machine"] for r in risks) == [f"L1-M{k}" for k in range(1, 7)]
    assert all(0.0 <= r["probability"] <= 1.0 for r in risks)

    # Close whatever the real model opened, then force every machine into act: one alert and one webhook
    # call per machine, however often it is scored.
    _store_variant(fresh_db_url, "line:line1", act_probability=2.0, release_probability=1.5)
    pdm.score(fresh_db_url, now=end, settings=ps)
    received.clear()
    _store_variant(fresh_db_url, "line:line1", act_probability=0.0, act_health=-1.0, release_probability=0.0)
    pdm.score(fresh_db_url, now=end, settings=ps)
    pdm.score(fresh_db_url, now=end + dt.timedelta(minutes=15), settings=ps)
    assert sorted(p["machine"] for p in received) == [f"L1-M{k}" for k in range(1, 7)]
    assert {p["event"] for p in received} == {"andon.pdm.alert"}
    # Falling below the release threshold closes the alert; the next crossing is a new alert.
    _store_variant(fresh_db_url, "line:line1", act_probability=2.0, release_probability=1.5)
    pdm.score(fresh_db_url, now=end + dt.timedelta(minutes=30), settings=ps)
    _store_variant(fresh_db_url, "line:line1", act_probability=0.0, act_health=-1.0, release_probability=0.0)
    pdm.score(fresh_db_url, now=end + dt.timedelta(minutes=45), settings=ps)
    assert len(received) == 12

    with psycopg.connect(fresh_db_url) as conn:
        _, token = keys.create_key(conn, "viewer", "viewer")
        conn.commit()
    app = create_app(Settings(database_url=fresh_db_url), refresh_interval_s=3600)
    from api.routers import risk as risk_router

    app.include_router(risk_router.router)
    with TestClient(app) as client:
        h = {"X-API-Key": token}
        ranked = client.get("/api/v1/risk", params={"line": "line1"}, headers=h)
        assert ranked.status_code == 200
        body = ranked.json()
        assert len(body) == 6 and {r["level"] for r in body} == {"act"}
        assert [r["probability"] for r in body] == sorted((r["probability"] for r in body), reverse=True)
        assert set(body[0]) >= {"machine", "level", "probability", "lead_time_h", "drivers"}
        one = client.get("/api/v1/machines/L1-M2/risk", params={"start": (end - dt.timedelta(days=1)).isoformat(),
                                                                 "end": (end + dt.timedelta(hours=1)).isoformat()},
                         headers=h)
        assert one.status_code == 200
        detail = one.json()
        # Scores are stamped at the end of the last whole 30-min bin: the runs at end, +15, +30 and +45 min
        # give two stamps (a re-score of the same bin replaces it).
        assert [h["ts"] for h in detail["history"]] == [end.isoformat().replace("+00:00", "Z"),
                                                         (end + dt.timedelta(minutes=30)).isoformat()
                                                         .replace("+00:00", "Z")]
        assert 2 <= len(detail["alerts"]) <= 3
        models = client.get("/api/v1/pdm/models", headers=h).json()
        assert len(models) >= 5 and "pipeline" not in models[0] and "metrics" in models[0]
        assert client.get("/api/v1/risk", params={"line": "nope"}, headers=h).status_code == 404
        assert client.get("/api/v1/risk", params={"line": "line1"}).status_code == 401
