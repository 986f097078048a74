"""API basics against the real database: keys and roles, problem+json errors, plant model, states."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from fastapi.testclient import TestClient

from andon.cli import main as andon_main
from andon.events import MachineState, StateChange
from andon.settings import Settings
from andon.storage import db, keys
from andon.storage.writer import EventWriter
from api.app import create_app


@pytest.fixture
def api(fresh_db_url):
    app = create_app(Settings(database_url=fresh_db_url), refresh_interval_s=3600)
    with TestClient(app) as client, psycopg.connect(fresh_db_url) as conn:
        tokens = {role: keys.create_key(conn, f"test-{role}", role)[1] for role in keys.ROLES}
        conn.commit()
        yield client, tokens, fresh_db_url


def test_health_probes(api):
    client, _, _ = api
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_keys_roles_and_problem_json(api):
    client, tokens, url = api
    r = client.get("/api/v1/plant")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith("an API key is required")
    assert client.get("/api/v1/plant", headers={"X-API-Key": "andon_nope_nope"}).status_code == 401
    assert client.get("/api/v1/plant", headers={"X-API-Key": tokens["gateway"]}).status_code == 403
    r = client.get("/api/v1/plant", headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert r.status_code == 200 and r.json()["name"] == "Demo Plant"
    # Replacing the model needs admin; a bad model is refused with the path of the problem.
    body = r.json()
    r = client.put("/api/v1/plant", json=body, headers={"X-API-Key": tokens["maintainer"]})
    assert r.status_code == 403 and "needs a admin key" in r.json()["detail"]
    body["sites"][0]["lines"][0]["machines"][0]["ideal_cycle_time_s"] = -1
    r = client.put("/api/v1/plant", json=body, headers={"X-API-Key": tokens["admin"]})
    assert r.status_code == 400
    assert "sites[0].lines[0].machines[0].ideal_cycle_time_s: Input should be greater than 0" in r.json()["detail"]
    body["sites"][0]["lines"][0]["machines"][0]["ideal_cycle_time_s"] = 49
    r = client.put("/api/v1/plant", json=body, headers={"X-API-Key": tokens["admin"]})
    assert r.status_code == 200 and r.json()["version"] >= 2
    lines = client.get("/api/v1/lines", headers={"X-API-Key": tokens["viewer"]}).json()
    assert lines[0]["machines"][0]["ideal_cycle_time_s"] == 49
    # A revoked key stops working at once.
    with psycopg.connect(url) as conn:
        prefix = tokens["viewer"].split("_")[1]
        assert keys.revoke_key(conn, prefix)
        conn.commit()
    assert client.get("/api/v1/plant", headers={"X-API-Key": tokens["viewer"]}).status_code == 401


def test_live_states(api):
    client, tokens, url = api
    pool = db.make_pool(url)
    now = dt.datetime.now(dt.UTC)
    try:
        EventWriter(pool).write([StateChange("L1-M2", now - dt.timedelta(seconds=5), MachineState.UNPLANNED_STOP,
                                             "t", fault_code="E3x")])
    finally:
        pool.close()
    r = client.get("/api/v1/lines/line1/states", headers={"X-API-Key": tokens["viewer"]})
    by = {s["machine"]: s for s in r.json()}
    assert by["L1-M2"]["state"] == "unplanned_stop" and by["L1-M2"]["reason_code"] == "tool-break"
    assert by["L1-M1"]["state"] == "offline"
    assert client.get("/api/v1/lines/nope/states", headers={"X-API-Key": tokens["viewer"]}).status_code == 404


def test_keys_cli(fresh_db_url, capsys):
    assert andon_main(["keys", "create", "--role", "viewer", "--name", "board", "--database-url", fresh_db_url]) == 0
    out = capsys.readouterr().out
    token = out.split("token (shown once, store it now): ")[1].strip()
    assert andon_main(["keys", "list", "--database-url", fresh_db_url]) == 0
    assert "board" in capsys.readouterr().out
    with psycopg.connect(fresh_db_url) as conn:
        assert keys.verify_token(conn, token).role == "viewer"
    assert andon_main(["keys", "revoke", "--key", token.split("_")[1], "--database-url", fresh_db_url]) == 0
    with psycopg.connect(fresh_db_url) as conn:
        assert keys.verify_token(conn, token) is None
    with pytest.raises(SystemExit):
        andon_main(["keys", "create", "--role", "root", "--name", "x", "--database-url", fresh_db_url])
    assert andon_main(["keys", "revoke", "--key", "nonexistent", "--database-url", fresh_db_url]) == 1
