"""Grafana dashboards: every panel's SQL, with Grafana's macros and variables substituted, runs against a
real database; the OEE panel agrees with the API's figures on the published example."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import psycopg
import pytest
import yaml

from andon.plant import load_plant_model
from andon.storage import db, plant_sync, rollups
from andon.storage.writer import EventWriter
from tests.test_api_oee import FIXTURES, _shift_events

GRAFANA = Path(__file__).resolve().parent.parent / "dashboards" / "grafana"


def substitute(sql: str, start: dt.datetime, end: dt.datetime, variables: dict[str, list[str]]) -> str:
    """Grafana's PostgreSQL macros and template variables, expanded as Grafana does."""
    a, b = f"'{start.isoformat()}'::timestamptz", f"'{end.isoformat()}'::timestamptz"
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} BETWEEN {a} AND {b}", sql)
    sql = sql.replace("$__timeFrom()", a).replace("$__timeTo()", b)

    def group(m: re.Match) -> str:
        col, interval = m.group(1).strip(), m.group(2).strip().strip("'")
        seconds = {"1d": 86400, "1h": 3600, "1m": 60}[interval]
        return f'floor(extract(epoch from {col})/{seconds})*{seconds} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", group, sql)
    for name, values in variables.items():
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        sql = sql.replace(f"'${name}'", quoted).replace(f"${name}", quoted)
    assert "$" not in sql, sql
    return sql


def dashboards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))]


def test_provisioning_files_are_valid():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "timescaledb.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "andon-tsdb"
    names = {d["title"] for d in dashboards()}
    assert names == {"Andon · OEE trend", "Andon · State timeline", "Andon · Downtime Pareto", "Andon · Risk"}
    for d in dashboards():
        for panel in d["panels"]:
            assert panel["datasource"]["uid"] == "andon-tsdb"
            assert panel["targets"], panel["title"]


@pytest.fixture
def example_db(fresh_db_url):
    model = load_plant_model(FIXTURES / "oee_example.yaml")
    with psycopg.connect(fresh_db_url) as conn:
        plant_sync.sync_plant_model(conn, model, "test", force=True)
        conn.commit()
    events, start, end = _shift_events()
    pool = db.make_pool(fresh_db_url)
    try:
        EventWriter(pool).write(events)
    finally:
        pool.close()
    with psycopg.connect(fresh_db_url) as conn:
        rollups.refresh(conn, now=end + dt.timedelta(days=1))
        # Two risk scores and an alert, as the scoring loop stores them, for the risk dashboard.
        num = conn.execute("select num from machines where id = 'widget-press'").fetchone()[0]
        for k, (p, level) in enumerate(((0.2, "ok"), (0.9, "act"))):
            conn.execute(
                "insert into pdm_risk_scores (machine, ts, probability, level, lead_time_h, drivers) "
                "values (%s, %s, %s, %s, %s, %s)",
                (num, start + dt.timedelta(hours=1 + k), p, level, 12.0, '["vibration RMS up 40 % over 3 days"]'),
            )
        conn.execute("insert into pdm_alerts (machine, opened_at, probability) values (%s, %s, 0.9)",
                     (num, start + dt.timedelta(hours=2)))
        conn.commit()
    return fresh_db_url, start, end


def test_every_panel_query_runs_and_oee_matches(example_db):
    url, start, end = example_db
    variables = {"line": ["example-line"], "machine": ["widget-press"]}
    results = {}
    with psycopg.connect(url) as conn:
        for d in dashboards():
            for var in d["templating"]["list"]:
                rows = conn.execute(substitute(var["query"], start, end, variables)).fetchall()
                assert rows, (d["title"], var["name"])
            for panel in d["panels"]:
                for t in panel["targets"]:
                    rows = conn.execute(substitute(t["rawSql"], start, end, variables)).fetchall()
                    assert rows, (d["title"], panel["title"])
                    results[(d["uid"], panel["id"])] = rows
    # OEE trend: one day bucket for the shift, with the published factors.
    (_, a, p, q, oee), = results[("andon-oee", 1)]
    assert (round(100 * a, 2), round(100 * p, 2), round(100 * q, 2), round(100 * oee, 2)) == (88.81, 86.11, 97.8,
                                                                                              74.79)
    # Pareto: the one 47-minute stop with its reason.
    assert results[("andon-downtime", 1)][0][:2] == ("jam-clear", pytest.approx(47.0))
    # Risk: the latest score first, and the alert.
    assert results[("andon-risk", 2)][0][:3] == ("widget-press", "act", 0.9)
    assert len(results[("andon-risk", 3)]) == 1
