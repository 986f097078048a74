"""All SQL of predictive maintenance: binned telemetry, warnings, model versions, risk scores, alerts.

``telemetry_bins`` is the database twin of ``analytics.pdm.data.bin_telemetry`` (same columns, same
definitions: clean statistics over in-range non-zero samples, linear-interpolated quantiles, population
standard deviation, kurtosis from the centred fourth moment), so months of raw samples are summarised
where they live and only ~144 rows per machine, channel and day come back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from analytics.pdm.data import BIN_COLUMNS, DEFAULT_VALID_RANGES, WARNING_PREFIX
from andon.storage.rollups import PlantContext

UTC = dt.UTC


def _nums(ctx: PlantContext, machine_ids: Sequence[str]) -> dict[int, str]:
    return {ctx.by_id[m].num: m for m in machine_ids}


def telemetry_bins(
    conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime, end: dt.datetime,
    bin_s: float, valid_ranges: dict[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    ranges = valid_ranges or DEFAULT_VALID_RANGES
    nums = _nums(ctx, machine_ids)
    rows = conn.execute(
        """
        with r as (select * from unnest(%(metrics)s::text[], %(lo)s::float8[], %(hi)s::float8[]) as r(metric, lo, hi)),
        raw as (
            select t.machine, t.metric,
                   floor(extract(epoch from (t.ts - %(origin)s::timestamptz)) / %(bin_s)s)::bigint as b, t.value,
                   t.value = 0 as zero,
                   t.value <> 0 and (t.value <= coalesce(r.lo, '-infinity'::float8)
                                     or t.value >= coalesce(r.hi, 'infinity'::float8)) as oor
            from telemetry t left join r on r.metric = t.metric
            where t.machine = any(%(nums)s) and t.ts >= %(start)s and t.ts < %(end)s
              and t.metric not like %(warning)s
        ),
        counted as (
            select machine, metric, b, count(*) as n, count(*) filter (where oor) as n_oor,
                   count(*) filter (where zero) as n_zero
            from raw group by machine, metric, b
        ),
        clean as (
            select machine, metric, b, value, avg(value) over (partition by machine, metric, b) as mu
            from raw where not zero and not oor
        ),
        stats as (
            select machine, metric, b, count(*) as n_clean,
                   percentile_cont(array[0.5, 0.6, 0.7]) within group (order by value) as q,
                   avg(value) as mean, stddev_pop(value) as std, sqrt(avg(value * value)) as rms,
                   avg((value - mu) ^ 4) as m4, min(value) as vmin, max(value) as vmax
            from clean group by machine, metric, b
        )
        select c.machine, c.metric, c.b, c.n, c.n_oor, c.n_zero, coalesce(s.n_clean, 0), s.q[1], s.q[2], s.q[3],
               s.mean, s.std, s.rms,
               case when s.std > 0 then s.m4 / (s.std ^ 4) end, s.vmin, s.vmax
        from counted c left join stats s using (machine, metric, b)
        order by c.machine, c.metric, c.b
        """,
        {"metrics": list(ranges), "lo": [v[0] for v in ranges.values()], "hi": [v[1] for v in ranges.values()],
         "origin": start, "bin_s": bin_s, "nums": list(nums), "start": start, "end": end,
         "warning": WARNING_PREFIX + "%"},
    ).fetchall()
    cols = ["machine", "metric", "b", *BIN_COLUMNS[3:]]
    df = pd.DataFrame(rows, columns=cols)
    df["machine"] = df["machine"].map(nums)
    df["bin_start"] = pd.Timestamp(start).tz_convert("UTC") + pd.to_timedelta(
        df.pop("b").astype("int64") * int(bin_s * 1e9), unit="ns")
    for c in BIN_COLUMNS[3:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df[BIN_COLUMNS]


def warnings(conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime,
             end: dt.datetime) -> pd.DataFrame:
    """Warning and fault codes that did not stop the machine: telemetry metrics named 'warning:<code>'."""
    nums = _nums(ctx, machine_ids)
    rows = conn.execute(
        "select machine, ts, substr(metric, %s) from telemetry where machine = any(%s) and metric like %s "
        "and ts >= %s and ts < %s order by machine, ts",
        (len(WARNING_PREFIX) + 1, list(nums), WARNING_PREFIX + "%", start, end),
    ).fetchall()
    df = pd.DataFrame(rows, columns=["machine", "ts", "code"])
    df["machine"] = df["machine"].map(nums)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def first_data(conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str]) -> dt.datetime | None:
    nums = list(_nums(ctx, machine_ids))
    return conn.execute("select min(ts) from state_events where machine = any(%s)", (nums,)).fetchone()[0]


# --- model versions ------------------------------------------------------------------------------------


def insert_model(conn: psycopg.Connection, *, scope: str, train_start: dt.datetime, train_end: dt.datetime,
                 horizon_h: float, status: str, status_reason: str, metrics: dict[str, Any], params: dict[str, Any],
                 pipeline: bytes, sha256: str) -> int:
    if status == "promoted":
        conn.execute("update pdm_models set status = 'retired', status_reason = 'superseded' "
                     "where scope = %s and status = 'promoted'", (scope,))
    return conn.execute(
        "insert into pdm_models (scope, train_start, train_end, horizon_h, status, status_reason, metrics, params, "
        "pipeline, sha256) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning version",
        (scope, train_start, train_end, horizon_h, status, status_reason, Jsonb(metrics), Jsonb(params), pipeline,
         sha256),
    ).fetchone()[0]


def promoted_model(conn: psycopg.Connection, scope: str) -> tuple[int, dict[str, Any], bytes, str] | None:
    row = conn.execute("select version, metrics, pipeline, sha256 from pdm_models "
                       "where scope = %s and status = 'promoted'", (scope,)).fetchone()
    return (row[0], row[1], bytes(row[2]), row[3]) if row else None


def promoted_scopes(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("select scope from pdm_models where status = 'promoted' order by scope")]


def list_models(conn: psycopg.Connection, scope: str | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(
        "select version, created_at, scope, train_start, train_end, horizon_h, status, status_reason, metrics, "
        "params, sha256, length(pipeline) from pdm_models where %s::text is null or scope = %s order by version desc",
        (scope, scope),
    ).fetchall()
    keys = ["version", "created_at", "scope", "train_start", "train_end", "horizon_h", "status", "status_reason",
            "metrics", "params", "sha256", "size_bytes"]
    return [dict(zip(keys, r, strict=True)) for r in rows]


# --- risk scores ---------------------------------------------------------------------------------------


def insert_risk_scores(conn: psycopg.Connection, ctx: PlantContext, model_version: int | None,
                       risks: Sequence[dict[str, Any]]) -> int:
    rows = [(ctx.by_id[r["machine"]].num, r["ts"], model_version, r["probability"], r["level"], r.get("health"),
             r.get("lead_time_h"), r.get("rul_running_h"), Jsonb(r.get("drivers", [])),
             Jsonb(r.get("data_quality", []))) for r in risks]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into pdm_risk_scores (machine, ts, model_version, probability, level, health, lead_time_h, "
            "rul_running_h, drivers, data_quality) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "on conflict (machine, ts) do update set model_version = excluded.model_version, "
            "probability = excluded.probability, level = excluded.level, health = excluded.health, "
            "lead_time_h = excluded.lead_time_h, rul_running_h = excluded.rul_running_h, drivers = excluded.drivers, "
            "data_quality = excluded.data_quality, scored_at = now()",
            rows,
        )
    return len(rows)


_RISK_COLUMNS = ["machine", "ts", "model_version", "probability", "level", "health", "lead_time_h", "rul_running_h",
                 "drivers", "data_quality"]


def latest_risks(conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str]) -> list[dict[str, Any]]:
    nums = _nums(ctx, machine_ids)
    rows = conn.execute(
        f"select distinct on (machine) {', '.join(_RISK_COLUMNS)} from pdm_risk_scores "
        "where machine = any(%s) order by machine, ts desc",
        (list(nums),),
    ).fetchall()
    out = [dict(zip(_RISK_COLUMNS, r, strict=True)) for r in rows]
    for r in out:
        r["machine"] = nums[r["machine"]]
    return out


def risk_history(conn: psycopg.Connection, ctx: PlantContext, machine_id: str, start: dt.datetime,
                 end: dt.datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"select {', '.join(_RISK_COLUMNS)} from pdm_risk_scores where machine = %s and ts >= %s and ts < %s "
        "order by ts",
        (ctx.by_id[machine_id].num, start, end),
    ).fetchall()
    out = [dict(zip(_RISK_COLUMNS, r, strict=True)) for r in rows]
    for r in out:
        r["machine"] = machine_id
    return out


# --- alerts --------------------------------------------------------------------------------------------


def open_alert(conn: psycopg.Connection, ctx: PlantContext, machine_id: str, *, opened_at: dt.datetime,
               model_version: int | None, probability: float, lead_time_h: float | None, drivers: list[str],
               webhook_status: str) -> int | None:
    """Open an alert unless one is already open for the machine; returns the new id, or None (dedup)."""
    row = conn.execute(
        "insert into pdm_alerts (machine, opened_at, model_version, probability, lead_time_h, drivers, webhook_status) "
        "values (%s, %s, %s, %s, %s, %s, %s) on conflict (machine) where closed_at is null do nothing returning id",
        (ctx.by_id[machine_id].num, opened_at, model_version, probability, lead_time_h, Jsonb(drivers),
         webhook_status),
    ).fetchone()
    return row[0] if row else None


def close_alert(conn: psycopg.Connection, ctx: PlantContext, machine_id: str, closed_at: dt.datetime) -> int:
    return conn.execute("update pdm_alerts set closed_at = %s where machine = %s and closed_at is null",
                        (closed_at, ctx.by_id[machine_id].num)).rowcount


def claim_undelivered(conn: psycopg.Connection, max_attempts: int) -> list[dict[str, Any]]:
    """Alerts whose webhook is still owed, marked 'sending' so that a second scorer does not send them too."""
    rows = conn.execute(
        """
        update pdm_alerts a set webhook_status = 'sending', webhook_attempts = webhook_attempts + 1
        from machines m
        where m.num = a.machine and a.webhook_status in ('pending', 'failed') and a.webhook_attempts < %s
          and a.id in (select id from pdm_alerts where webhook_status in ('pending', 'failed')
                       for update skip locked)
        returning a.id, m.id, m.line_id, a.opened_at, a.probability, a.lead_time_h, a.drivers, a.model_version,
                  a.webhook_attempts
        """,
        (max_attempts,),
    ).fetchall()
    keys = ["id", "machine", "line", "opened_at", "probability", "lead_time_h", "drivers", "model_version",
            "attempt"]
    return [dict(zip(keys, r, strict=True)) for r in rows]


def mark_delivery(conn: psycopg.Connection, alert_id: int, ok: bool, error: str | None = None) -> None:
    conn.execute(
        "update pdm_alerts set webhook_status = %s, webhook_error = %s, delivered_at = case when %s then now() end "
        "where id = %s",
        ("delivered" if ok else "failed", error, ok, alert_id),
    )


def alerts(conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], limit: int = 50
           ) -> list[dict[str, Any]]:
    nums = _nums(ctx, machine_ids)
    rows = conn.execute(
        "select id, machine, opened_at, closed_at, model_version, probability, lead_time_h, drivers, webhook_status, "
        "webhook_attempts, delivered_at from pdm_alerts where machine = any(%s) order by opened_at desc limit %s",
        (list(nums), limit),
    ).fetchall()
    keys = ["id", "machine", "opened_at", "closed_at", "model_version", "probability", "lead_time_h", "drivers",
            "webhook_status", "webhook_attempts", "delivered_at"]
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for r in out:
        r["machine"] = nums[r["machine"]]
    return out
